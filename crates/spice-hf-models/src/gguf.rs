//! A GGUF v2/v3 reader: header, every metadata value type, the tensor table and alignment,
//! with every count and offset checked against the file before anything is allocated.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

pub use crate::quant::GgmlType;
use crate::{Error, Result};

/// `GGUF` in little-endian.
const MAGIC: u32 = 0x4655_4747;
/// Most dimensions a GGML tensor has.
const MAX_DIMS: u32 = 4;
/// Longest string accepted (the largest real ones are chat templates of a few KiB).
const MAX_STRING: u64 = 16 << 20;
/// Deepest nesting of arrays accepted.
const MAX_DEPTH: usize = 4;
/// Most metadata values (array elements included) a file may hold: the largest real
/// vocabularies are ~300,000 tokens plus as many merges; each value takes 32 bytes in memory,
/// so this bounds the metadata at 128 MiB however the file's counts are forged.
const MAX_VALUES: u64 = 4 << 20;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// uint8.
    U8(u8),
    /// int8.
    I8(i8),
    /// uint16.
    U16(u16),
    /// int16.
    I16(i16),
    /// uint32.
    U32(u32),
    /// int32.
    I32(i32),
    /// float32.
    F32(f32),
    /// bool.
    Bool(bool),
    /// UTF-8 string.
    String(String),
    /// Array of values of one type.
    Array(Vec<MetaValue>),
    /// uint64.
    U64(u64),
    /// int64.
    I64(i64),
    /// float64.
    F64(f64),
}

impl MetaValue {
    /// An integer value as u64 (negative values are `None`).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            Self::Bool(b) => Some(b.into()),
            _ => None,
        }
    }

    /// A numeric value as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            Self::I8(v) => Some(v.into()),
            Self::I16(v) => Some(v.into()),
            Self::I32(v) => Some(v.into()),
            Self::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// A string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// A bool value.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// An array value.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One entry of the tensor table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions as GGUF lists them: `ne0` (the contiguous one) first.
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Offset of its data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Bytes of its data.
    pub fn byte_len(&self) -> u64 {
        let (n, b) = self.ggml_type.block().unwrap_or((1, 0));
        self.elements() / n * b
    }

    /// Dimensions in PyTorch order (`[out, in]` for a matrix).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed GGUF file (header, metadata and tensor table; data stays on disk).
#[derive(Debug, Clone)]
pub struct GgufFile {
    /// The file.
    pub path: PathBuf,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata by key.
    pub metadata: BTreeMap<String, MetaValue>,
    /// The tensor table, in file order.
    pub tensors: Vec<TensorInfo>,
    /// Alignment of tensor data.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

struct Cursor<R> {
    inner: R,
    pos: u64,
    len: u64,
    path: PathBuf,
    /// Metadata values read so far (see [`MAX_VALUES`]).
    values: u64,
}

impl<R: Read> Cursor<R> {
    fn err(&self, reason: impl Into<String>) -> Error {
        Error::Gguf {
            path: self.path.clone(),
            offset: self.pos,
            reason: reason.into(),
        }
    }

    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        if self.remaining() < N as u64 {
            return Err(self.err("unexpected end of file (truncated header)"));
        }
        self.inner
            .read_exact(&mut b)
            .map_err(|e| self.err(format!("read failed: {e}")))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    /// A count of items each at least `min_size` bytes, checked against what is left.
    fn count(&mut self, what: &str, min_size: u64) -> Result<u64> {
        let n = self.u64()?;
        if n.saturating_mul(min_size.max(1)) > self.remaining() {
            return Err(self.err(format!("{what} count {n} runs past the end of the file")));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String> {
        let n = self.u64()?;
        if n > MAX_STRING || n > self.remaining() {
            return Err(self.err(format!(
                "string of {n} bytes runs past the end of the file or the 16 MiB limit"
            )));
        }
        let mut buf = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| self.err(format!("read failed: {e}")))?;
        self.pos += n;
        String::from_utf8(buf).map_err(|_| self.err("a string is not valid UTF-8"))
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<MetaValue> {
        Ok(match ty {
            0 => MetaValue::U8(u8::from_le_bytes(self.bytes()?)),
            1 => MetaValue::I8(i8::from_le_bytes(self.bytes()?)),
            2 => MetaValue::U16(u16::from_le_bytes(self.bytes()?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.bytes()?)),
            4 => MetaValue::U32(self.u32()?),
            5 => MetaValue::I32(i32::from_le_bytes(self.bytes()?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.bytes()?)),
            7 => match u8::from_le_bytes(self.bytes()?) {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(self.err(format!("bool value {b} is neither 0 nor 1"))),
            },
            8 => MetaValue::String(self.string()?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(self.err("arrays nested too deeply"));
                }
                let elem = self.u32()?;
                let min = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8,
                    other => return Err(self.err(format!("unknown metadata value type {other}"))),
                };
                let n = self.count("array", min)?;
                self.values = self.values.saturating_add(n);
                if self.values > MAX_VALUES {
                    return Err(self.err(format!(
                        "metadata arrays hold more than {MAX_VALUES} values in all; this is not a model file spice-hf can read"
                    )));
                }
                let mut v = Vec::with_capacity(n.min(1 << 20) as usize);
                for _ in 0..n {
                    v.push(self.value(elem, depth + 1)?);
                }
                MetaValue::Array(v)
            }
            10 => MetaValue::U64(self.u64()?),
            11 => MetaValue::I64(i64::from_le_bytes(self.bytes()?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.bytes()?)),
            other => return Err(self.err(format!("unknown metadata value type {other}"))),
        })
    }
}

impl GgufFile {
    /// Reads and checks the header of the GGUF file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        Self::parse(BufReader::with_capacity(1 << 16, file), len, path)
    }

    /// Parses a GGUF header from `reader` (a file of `len` bytes).
    pub fn parse(reader: impl Read, len: u64, path: &Path) -> Result<Self> {
        let mut c = Cursor {
            inner: reader,
            pos: 0,
            len,
            path: path.to_path_buf(),
            values: 0,
        };
        let magic = c.u32()?;
        if magic != MAGIC {
            return Err(c.err(format!("bad magic {magic:#010x}: not a GGUF file")));
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(c.err(format!(
                "GGUF version {version} is not supported (2 and 3 are)"
            )));
        }
        // A tensor-table entry takes at least 8 (name length) + 4 + 8 + 4 + 8 bytes.
        let n_tensors = c.count("tensor", 32)?;
        let n_kv = c.count("metadata", 12)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string()?;
            let ty = c.u32()?;
            let value = c.value(ty, 0)?;
            metadata.insert(key, value);
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
                _ => return Err(c.err(format!("general.alignment {v:?} is not a power of two"))),
            },
        };
        // Reserve only what a real model needs; a forged count grows the table as it is read.
        let mut tensors = Vec::with_capacity(n_tensors.min(1 << 14) as usize);
        for _ in 0..n_tensors {
            let name = c.string()?;
            let n_dims = c.u32()?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(c.err(format!(
                    "tensor {name:?} has {n_dims} dimensions (1 to 4 allowed)"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64()?);
            }
            let ggml_type = GgmlType::from_id(c.u32()?);
            let offset = c.u64()?;
            let elements =
                dims.iter().try_fold(
                    1u64,
                    |acc, &d| if d == 0 { None } else { acc.checked_mul(d) },
                );
            let Some(elements) = elements.filter(|&e| e <= 1 << 40) else {
                return Err(c.err(format!(
                    "tensor {name:?} has impossible dimensions {dims:?}"
                )));
            };
            let Some((block, _)) = ggml_type.block() else {
                return Err(c.err(format!("tensor {name:?} has unsupported type {ggml_type}")));
            };
            if dims[0] % block != 0 || elements % block != 0 {
                return Err(c.err(format!("tensor {name:?}: first dimension {} is not a multiple of the {ggml_type} block size {block}", dims[0])));
            }
            if offset % alignment != 0 {
                return Err(c.err(format!(
                    "tensor {name:?} data offset {offset} is not aligned to {alignment}"
                )));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        let data_offset = c.pos.div_ceil(alignment) * alignment;
        let file = Self {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        };
        for t in &file.tensors {
            let end = data_offset
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.byte_len()));
            if end.is_none_or(|e| e > len) {
                return Err(Error::Gguf {
                    path: path.to_path_buf(),
                    offset: data_offset + t.offset,
                    reason: format!(
                        "tensor {:?} data runs past the end of the file ({len} bytes); the file is truncated",
                        t.name
                    ),
                });
            }
        }
        Ok(file)
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// A required integer metadata value.
    pub fn u64(&self, key: &str) -> Result<u64> {
        self.get(key)
            .and_then(MetaValue::as_u64)
            .ok_or_else(|| self.missing(key))
    }

    /// A required float metadata value.
    pub fn f64(&self, key: &str) -> Result<f64> {
        self.get(key)
            .and_then(MetaValue::as_f64)
            .ok_or_else(|| self.missing(key))
    }

    /// A required string metadata value.
    pub fn str(&self, key: &str) -> Result<&str> {
        self.get(key)
            .and_then(MetaValue::as_str)
            .ok_or_else(|| self.missing(key))
    }

    fn missing(&self, key: &str) -> Error {
        Error::Gguf {
            path: self.path.clone(),
            offset: 0,
            reason: format!("metadata key {key:?} is missing or has the wrong type"),
        }
    }

    /// A tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Reads a tensor's raw bytes from disk.
    pub fn read_raw(&self, t: &TensorInfo) -> Result<Vec<u8>> {
        use std::io::{Seek, SeekFrom};
        let mut f =
            std::fs::File::open(&self.path).map_err(|e| Error::io("open", &self.path, e))?;
        f.seek(SeekFrom::Start(self.data_offset + t.offset))
            .map_err(|e| Error::io("seek", &self.path, e))?;
        let mut buf = vec![0u8; t.byte_len() as usize];
        f.read_exact(&mut buf)
            .map_err(|e| Error::io("read", &self.path, e))?;
        Ok(buf)
    }

    /// Reads and dequantizes a tensor to f32 (row-major, PyTorch shape [`TensorInfo::shape`]).
    pub fn read_f32(&self, t: &TensorInfo) -> Result<Vec<f32>> {
        let raw = self.read_raw(t)?;
        crate::quant::dequantize(t.ggml_type, &raw, t.elements() as usize)
    }
}
