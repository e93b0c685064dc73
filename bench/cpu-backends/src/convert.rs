//! Rewrites the matrices of a GGUF file in another format (the benchmark's Q8_0 and F16
//! versions of the fixture). Metadata is written back value for value.

use std::io::Write as _;

use spice_hf_kernels::format::Format;
use spice_hf_kernels::quantize::quantize_matrix;
use spice_hf_models::gguf::{GgmlType, GgufFile, MetaValue};

fn meta_type(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::String(_) => 8,
        MetaValue::Array(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    }
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    w.extend((s.len() as u64).to_le_bytes());
    w.extend(s.as_bytes());
}

fn put_value(w: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => w.push(*x),
        MetaValue::I8(x) => w.extend(x.to_le_bytes()),
        MetaValue::U16(x) => w.extend(x.to_le_bytes()),
        MetaValue::I16(x) => w.extend(x.to_le_bytes()),
        MetaValue::U32(x) => w.extend(x.to_le_bytes()),
        MetaValue::I32(x) => w.extend(x.to_le_bytes()),
        MetaValue::F32(x) => w.extend(x.to_le_bytes()),
        MetaValue::Bool(x) => w.push(*x as u8),
        MetaValue::String(s) => put_str(w, s),
        MetaValue::Array(a) => {
            let ty = a.first().map_or(4, meta_type);
            w.extend(ty.to_le_bytes());
            w.extend((a.len() as u64).to_le_bytes());
            a.iter().for_each(|x| put_value(w, x));
        }
        MetaValue::U64(x) => w.extend(x.to_le_bytes()),
        MetaValue::I64(x) => w.extend(x.to_le_bytes()),
        MetaValue::F64(x) => w.extend(x.to_le_bytes()),
    }
}

/// `convert IN OUT q8_0|f16`.
pub(crate) fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let [input, output, fmt] = args else {
        return Err("usage: convert IN.gguf OUT.gguf q8_0|f16".into());
    };
    let (format, id) = match fmt.as_str() {
        "q8_0" => (Format::Q8_0, 8u32),
        "f16" => (Format::F16, 1u32),
        other => return Err(format!("unknown target format {other}").into()),
    };
    let g = GgufFile::open(input.as_ref())?;
    let mut tensors = Vec::new();
    for t in &g.tensors {
        let raw = g.read_raw(t)?;
        if t.dims.len() == 2 && !matches!(t.ggml_type, GgmlType::F32) {
            let values = g.read_f32(t)?;
            let cols = t.dims[0] as usize;
            tensors.push((t, id, quantize_matrix(format, &values, cols)));
        } else {
            let same = match t.ggml_type {
                GgmlType::F32 => 0,
                GgmlType::F16 => 1,
                other => return Err(format!("1-D tensor {} of type {other}", t.name).into()),
            };
            tensors.push((t, same, raw));
        }
    }
    let tensors: Vec<(&str, &[u64], u32, &[u8])> = tensors
        .iter()
        .map(|(t, ty, data)| (t.name.as_str(), t.dims.as_slice(), *ty, data.as_slice()))
        .collect();
    write_gguf(output.as_ref(), &g.metadata, g.alignment as usize, &tensors)
}

/// Writes a GGUF v3 file: `metadata` value for value, then each tensor `(name, dims ne0
/// first, GGML type id, bytes)` aligned to `align`.
pub(crate) fn write_gguf(
    output: &std::path::Path,
    metadata: &std::collections::BTreeMap<String, MetaValue>,
    align: usize,
    tensors: &[(&str, &[u64], u32, &[u8])],
) -> Result<(), Box<dyn std::error::Error>> {
    let mut w = Vec::new();
    w.extend(0x4655_4747u32.to_le_bytes());
    w.extend(3u32.to_le_bytes());
    w.extend((tensors.len() as u64).to_le_bytes());
    w.extend((metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut w, k);
        w.extend(meta_type(v).to_le_bytes());
        put_value(&mut w, v);
    }
    let mut offset = 0usize;
    for (name, dims, ty, data) in tensors {
        put_str(&mut w, name);
        w.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| w.extend(d.to_le_bytes()));
        w.extend(ty.to_le_bytes());
        w.extend((offset as u64).to_le_bytes());
        offset += data.len().next_multiple_of(align);
    }
    w.resize(w.len().next_multiple_of(align), 0);
    let mut file = std::io::BufWriter::new(std::fs::File::create(output)?);
    file.write_all(&w)?;
    for (_, _, _, data) in tensors {
        file.write_all(data)?;
        file.write_all(&vec![0u8; data.len().next_multiple_of(align) - data.len()])?;
    }
    file.flush()?;
    Ok(())
}
