//! Which instruction set the kernels use, chosen once per process at run time.
//!
//! `SPICE_HF_KERNELS=scalar` forces the portable path (so every machine can test both), and
//! `SPICE_HF_KERNELS=avx2` insists on AVX2 (falling back, with the reason in [`Choice::reason`],
//! when the CPU lacks it).

use std::sync::OnceLock;

/// The environment variable that forces a kernel path.
pub const ENV: &str = "SPICE_HF_KERNELS";

/// An instruction set the kernels are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Isa {
    /// Portable Rust, the reference the others are tested against.
    Scalar,
    /// x86-64 AVX2 with FMA and F16C.
    Avx2,
}

impl Isa {
    /// `scalar` or `avx2`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Avx2 => "avx2",
        }
    }

    /// Whether this CPU can run it.
    pub fn supported(self) -> bool {
        match self {
            Self::Scalar => true,
            Self::Avx2 => avx2_supported(),
        }
    }

    /// Every instruction set this CPU can run, the portable one first.
    pub fn available() -> Vec<Isa> {
        [Isa::Scalar, Isa::Avx2]
            .into_iter()
            .filter(|i| i.supported())
            .collect()
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2_supported() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_supported() -> bool {
    false
}

/// The chosen instruction set and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// What the kernels run.
    pub isa: Isa,
    /// Why (the CPU's features, or the environment variable).
    pub reason: String,
}

/// Chooses from the environment variable's value and what the CPU supports.
pub fn choose(forced: Option<&str>) -> Choice {
    let best = if Isa::Avx2.supported() {
        Isa::Avx2
    } else {
        Isa::Scalar
    };
    match forced.map(str::trim) {
        None | Some("") | Some("auto") => Choice {
            isa: best,
            reason: format!("best this CPU supports ({ENV} unset)"),
        },
        Some("scalar") => Choice {
            isa: Isa::Scalar,
            reason: format!("forced by {ENV}=scalar"),
        },
        Some("avx2") if Isa::Avx2.supported() => Choice {
            isa: Isa::Avx2,
            reason: format!("forced by {ENV}=avx2"),
        },
        Some(other) => Choice {
            isa: best,
            reason: format!(
                "{ENV}={other:?} is not an instruction set this CPU runs (scalar, avx2, auto); using {best}"
            ),
        },
    }
}

/// The process-wide choice, made once.
pub fn current() -> &'static Choice {
    static CHOICE: OnceLock<Choice> = OnceLock::new();
    CHOICE.get_or_init(|| choose(std::env::var(ENV).ok().as_deref()))
}
