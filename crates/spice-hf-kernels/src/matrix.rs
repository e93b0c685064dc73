//! A weight matrix kept in its file's format ([`QMatrix`]), its products with f32 activations,
//! and the thread pool they run on ([`Pool`]).

use std::sync::Arc;

use crate::format::Format;
use crate::isa::{self, Isa};
use crate::q8::Q8Acts;
use crate::{Error, Result};

/// Bytes owned by someone else (a memory map, a `Vec`), shared without copying.
#[derive(Clone)]
pub struct Bytes {
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    start: usize,
    len: usize,
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bytes")
            .field("start", &self.start)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Bytes {
    /// `len` bytes of `owner` from `start`; an error when they are not all there.
    pub fn new(
        owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
        start: usize,
        len: usize,
    ) -> Result<Self> {
        let have = (*owner).as_ref().len();
        if start.checked_add(len).is_none_or(|end| end > have) {
            return Err(Error::Shape(format!(
                "bytes {start}..{} are outside the {have} available",
                start.saturating_add(len)
            )));
        }
        Ok(Self { owner, start, len })
    }

    /// All of a vector.
    pub fn from_vec(v: Vec<u8>) -> Self {
        let len = v.len();
        Self {
            owner: Arc::new(v),
            start: 0,
            len,
        }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &(*self.owner).as_ref()[self.start..self.start + self.len]
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A `[rows, cols]` weight matrix stored row by row in `format`, as a GGUF or safetensors file
/// holds it (for a linear layer: `[out, in]`).
#[derive(Debug, Clone)]
pub struct QMatrix {
    format: Format,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: Bytes,
}

impl QMatrix {
    /// Wraps `data`; checks that it holds exactly `rows` rows of `cols` values.
    pub fn new(format: Format, rows: usize, cols: usize, data: Bytes) -> Result<Self> {
        let row_bytes = format.row_bytes(cols).ok_or_else(|| {
            Error::Shape(format!(
                "a {format} row of {cols} values is not a whole number of {}-value blocks",
                format.block_values()
            ))
        })?;
        if rows.checked_mul(row_bytes) != Some(data.len()) {
            return Err(Error::Shape(format!(
                "{} bytes do not hold a {rows} x {cols} {format} matrix",
                data.len()
            )));
        }
        Ok(Self {
            format,
            rows,
            cols,
            row_bytes,
            data,
        })
    }

    /// Storage format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Rows (outputs).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (inputs).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes it takes.
    pub fn byte_len(&self) -> usize {
        self.data.len()
    }

    /// The raw bytes of row `r`.
    pub fn row(&self, r: usize) -> &[u8] {
        &self.data.as_slice()[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Decodes row `r` to f32 (an embedding lookup).
    pub fn decode_row(&self, r: usize, out: &mut [f32]) {
        crate::format::decode_row(self.format, self.row(r), &mut out[..self.cols]);
    }

    fn check(&self, x: usize, y: usize, tokens: usize) -> Result<()> {
        if x != tokens * self.cols || y != tokens * self.rows {
            return Err(Error::Shape(format!(
                "a {} x {} matrix times {tokens} token(s) takes {} inputs and {} outputs, got {x} and {y}",
                self.rows,
                self.cols,
                tokens * self.cols,
                tokens * self.rows
            )));
        }
        Ok(())
    }

    /// `y = W x` for one token, on `pool`'s threads, with the process's instruction set.
    pub fn matvec(&self, pool: &Pool, x: &[f32], y: &mut [f32]) -> Result<()> {
        self.matvec_with(isa::current().isa, pool, x, y)
    }

    /// `y = W x` with a given instruction set (tests run every one the CPU has).
    pub fn matvec_with(&self, isa: Isa, pool: &Pool, x: &[f32], y: &mut [f32]) -> Result<()> {
        self.check(x.len(), y.len(), 1)?;
        let (fmt, rb) = (self.format, self.row_bytes);
        self.split(pool, 1, y, |rows, ys, _| {
            crate::dispatch::matvec_rows(isa, fmt, rows, rb, x, ys)
        });
        Ok(())
    }

    /// `Y = X Wᵀ` for `tokens` tokens: `x` is `[tokens, cols]`, `y` is `[tokens, rows]`.
    pub fn matmul(&self, pool: &Pool, x: &[f32], y: &mut [f32], tokens: usize) -> Result<()> {
        self.matmul_with(isa::current().isa, pool, x, y, tokens)
    }

    /// [`QMatrix::matmul`] with a given instruction set.
    pub fn matmul_with(
        &self,
        isa: Isa,
        pool: &Pool,
        x: &[f32],
        y: &mut [f32],
        tokens: usize,
    ) -> Result<()> {
        self.check(x.len(), y.len(), tokens)?;
        if tokens == 1 {
            return self.matvec_with(isa, pool, x, y);
        }
        let (fmt, rb, cols) = (self.format, self.row_bytes, self.cols);
        self.split(pool, tokens, y, |rows, ys, stride| {
            crate::dispatch::matmul_rows(isa, fmt, rows, rb, x, cols, ys, stride)
        });
        Ok(())
    }

    /// Whether [`QMatrix::matmul_q8`] can run on this matrix's format.
    pub fn has_q8_path(&self) -> bool {
        crate::q8::has_q8_path(self.format)
    }

    /// `Y = X Wᵀ` with the activations quantized to 8 bits ([`crate::q8`]): `x` holds
    /// `x.tokens()` tokens of `cols` values, `y` is `[tokens, rows]`. An error when the
    /// format has no 8-bit path ([`QMatrix::has_q8_path`]).
    pub fn matmul_q8(&self, pool: &Pool, x: &Q8Acts, y: &mut [f32]) -> Result<()> {
        self.matmul_q8_with(isa::current().isa, pool, x, y)
    }

    /// [`QMatrix::matmul_q8`] with a given instruction set.
    pub fn matmul_q8_with(&self, isa: Isa, pool: &Pool, x: &Q8Acts, y: &mut [f32]) -> Result<()> {
        if !self.has_q8_path() {
            return Err(Error::Shape(format!(
                "{} weights have no 8-bit activation kernel",
                self.format
            )));
        }
        let tokens = x.tokens();
        self.check(x.cols() * tokens, y.len(), tokens)?;
        let (fmt, rb) = (self.format, self.row_bytes);
        self.split(pool, tokens, y, |rows, ys, stride| {
            crate::dispatch::q8_matmul_rows(isa, fmt, rows, rb, x, ys, stride)
        });
        Ok(())
    }

    /// Splits the rows among the pool's threads and runs `work(rows, out, out_stride)` on
    /// each share: for one token straight into `y`; for several, into a block per task (its
    /// columns of `y` interleave with the other tasks') copied into `y` afterwards.
    fn split(
        &self,
        pool: &Pool,
        tokens: usize,
        y: &mut [f32],
        work: impl Fn(&[u8], &mut [f32], usize) + Sync,
    ) {
        let (rb, rows) = (self.row_bytes, self.rows);
        if tokens == 0 {
            return;
        }
        let data = self.data.as_slice();
        let chunk = pool.rows_per_task(rows, self.cols * tokens);
        if tokens == 1 {
            pool.for_each_chunk(y, chunk, |first, ys| {
                work(&data[first * rb..(first + ys.len()) * rb], ys, 0)
            });
            return;
        }
        let tasks = rows.div_ceil(chunk);
        let blocks: Vec<Vec<f32>> = pool.map_indices(tasks, |task| {
            let first = task * chunk;
            let n = chunk.min(rows - first);
            let mut block = vec![0f32; tokens * n];
            work(&data[first * rb..(first + n) * rb], &mut block, n);
            block
        });
        for (task, block) in blocks.iter().enumerate() {
            let first = task * chunk;
            let n = block.len() / tokens;
            for (t, part) in block.chunks_exact(n).enumerate() {
                y[t * rows + first..t * rows + first + n].copy_from_slice(part);
            }
        }
    }
}

/// The threads decode and prefill run on: one pool, sized once.
#[derive(Debug)]
pub struct Pool {
    inner: rayon::ThreadPool,
    threads: usize,
}

impl Pool {
    /// A pool of `threads` threads (at least one).
    pub fn new(threads: usize) -> Result<Self> {
        let threads = threads.max(1);
        let inner = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("spice-hf-kernels-{i}"))
            .build()
            .map_err(|e| Error::Threads(e.to_string()))?;
        Ok(Self { inner, threads })
    }

    /// The default size: the machine's physical cores.
    pub fn default_threads() -> usize {
        num_cpus::get_physical().max(1)
    }

    /// Threads in the pool.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` on the pool (the kernels it calls then split work without crossing threads
    /// to reach the pool).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.inner.install(f)
    }

    /// Runs `f` on the pool with the other threads kept awake until it returns: each spins,
    /// taking the pool's jobs (the products `f` splits) as soon as they appear instead of
    /// sleeping between them. A decode step is ~200 products separated by short serial work
    /// (norms, attention), and waking a sleeping thread for each cost more than the product on
    /// this project's VMs. llama.cpp's threads spin between graph nodes the same way. The
    /// spinning threads use their cores until `f` returns.
    pub fn install_spinning<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        use std::sync::atomic::{AtomicBool, Ordering};
        if self.threads == 1 {
            return self.inner.install(f);
        }
        /// Sets the flag when dropped, so the spinners stop even if `f` panics.
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let done = AtomicBool::new(false);
        self.inner.install(|| {
            let caller = rayon::current_thread_index();
            rayon::in_place_scope(|scope| {
                for _ in 1..self.threads {
                    scope.spawn(|_| {
                        // A spinner the caller's own thread picks up (while it waits for a
                        // stolen job) returns at once: spinning there would wait for itself.
                        if rayon::current_thread_index() == caller {
                            return;
                        }
                        while !done.load(Ordering::Acquire) {
                            if rayon::yield_now() != Some(rayon::Yield::Executed) {
                                std::hint::spin_loop();
                            }
                        }
                    });
                }
                let _done = Done(&done);
                f()
            })
        })
    }

    /// Rows per task so that each thread gets about two tasks (whole groups of four rows),
    /// and small products stay on one thread.
    fn rows_per_task(&self, rows: usize, work_per_row: usize) -> usize {
        const MIN_WORK: usize = 1 << 15;
        if self.threads == 1 || rows * work_per_row < MIN_WORK {
            return rows.max(1);
        }
        let tasks = self.threads * 2;
        rows.div_ceil(tasks).next_multiple_of(4).max(4)
    }

    fn for_each_chunk(&self, y: &mut [f32], chunk: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
        use rayon::prelude::*;
        if chunk >= y.len() {
            f(0, y);
            return;
        }
        self.inner.install(|| {
            y.par_chunks_mut(chunk)
                .enumerate()
                .for_each(|(i, ys)| f(i * chunk, ys))
        });
    }

    fn map_indices<T: Send>(&self, n: usize, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
        use rayon::prelude::*;
        if n == 1 {
            return vec![f(0)];
        }
        self.inner
            .install(|| (0..n).into_par_iter().map(f).collect())
    }
}
