//! The `spice-hf serve --config` file (YAML): the models to serve and their parameters, the
//! server and the telemetry. Parsing is strict: an unknown key or an invalid value is an error
//! that names the key and its line. Secrets (`hf_token` / `token`, `api_key`) must come from
//! `${env:VAR}` or `${file:PATH}`, never from the file in clear.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize;
use spice_hf_models::sampling;
use spice_hf_runtime::{Activations, KvDtype};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) models: Vec<ModelEntry>,
    #[serde(default)]
    pub(crate) server: ServerSection,
    #[serde(default)]
    pub(crate) telemetry: TelemetrySection,
}

/// One model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelEntry {
    /// A Hub reference (`[hf:]org/name[@rev]`), a model directory or a `.gguf` file.
    pub(crate) from: String,
    /// The id clients use; default the reference or the file stem.
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) params: Params,
}

/// A backend choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BackendChoice {
    Auto,
    Cpu,
    Wgpu,
    Cuda,
}

/// Sampling values checked while parsing, so that an out-of-range value is reported with its
/// line like any other error.
macro_rules! ranged {
    ($name:ident, $range:expr, $what:expr) => {
        #[doc = concat!("A ", $what, " in `", stringify!($range), "`.")]
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub(crate) struct $name(pub(crate) f32);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = f32::deserialize(d)?;
                let (lo, hi) = $range;
                if !(lo..=hi).contains(&v) {
                    return Err(serde::de::Error::custom(format!(
                        "{} {v} is out of range; it must be between {lo} and {hi}",
                        $what
                    )));
                }
                Ok(Self(v))
            }
        }
    };
}

ranged!(Temperature, sampling::TEMPERATURE, "temperature");
ranged!(
    Probability,
    sampling::PROBABILITY,
    "probability (top_p, min_p)"
);
ranged!(Penalty, sampling::REPETITION_PENALTY, "repetition penalty");

/// A setting written as a string its type parses (`kv_cache: f32`), checked while parsing.
fn parsed<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    Option::<String>::deserialize(d)?
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .transpose()
}

/// `threads`, checked while parsing (1 to 1024).
fn threads<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let v = usize::deserialize(d)?;
    if !(1..=1024).contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "threads {v} is out of range; it must be between 1 and 1024"
        )));
    }
    Ok(Some(v))
}

/// A model's parameters.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Params {
    #[serde(default, alias = "token")]
    pub(crate) hf_token: Option<String>,
    #[serde(default)]
    pub(crate) max_concurrency: Option<std::num::NonZeroUsize>,
    #[serde(default)]
    pub(crate) max_queue: Option<usize>,
    #[serde(default)]
    pub(crate) queue_timeout_s: Option<u64>,
    #[serde(default)]
    pub(crate) requests_per_minute: Option<std::num::NonZeroU32>,
    #[serde(default)]
    pub(crate) backend: Option<BackendChoice>,
    #[serde(default)]
    pub(crate) quant: Option<String>,
    #[serde(default)]
    pub(crate) chat_template: Option<String>,
    #[serde(default)]
    pub(crate) context_length: Option<usize>,
    /// Threads for the CPU kernels (1 to 1024; default: the physical cores).
    #[serde(default, deserialize_with = "threads")]
    pub(crate) threads: Option<usize>,
    /// How the CPU kernels store keys and values: `f16` (default) or `f32`.
    #[serde(default, deserialize_with = "parsed")]
    pub(crate) kv_cache: Option<KvDtype>,
    /// `f32` (default) or `q8`: the CPU kernels' 8-bit activation path.
    #[serde(default, deserialize_with = "parsed")]
    pub(crate) activations: Option<Activations>,
    #[serde(default)]
    pub(crate) initial_load: Option<bool>,
    #[serde(default)]
    pub(crate) capture_content: Option<bool>,
    #[serde(default)]
    pub(crate) max_tokens: Option<usize>,
    #[serde(default)]
    pub(crate) temperature: Option<Temperature>,
    #[serde(default)]
    pub(crate) top_p: Option<Probability>,
    #[serde(default)]
    pub(crate) top_k: Option<usize>,
    #[serde(default)]
    pub(crate) min_p: Option<Probability>,
    #[serde(default)]
    pub(crate) repetition_penalty: Option<Penalty>,
    #[serde(default)]
    pub(crate) seed: Option<u64>,
    #[serde(default)]
    pub(crate) stop: Option<Vec<String>>,
}

/// The server section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerSection {
    #[serde(default)]
    pub(crate) addr: Option<SocketAddr>,
    #[serde(default)]
    pub(crate) api_key: Option<String>,
    /// `/metrics` without the API key (for scrapers that cannot send one).
    #[serde(default)]
    pub(crate) public_metrics: Option<bool>,
    #[serde(default)]
    pub(crate) shutdown_grace_s: Option<u64>,
    #[serde(default)]
    pub(crate) health_interval_s: Option<u64>,
}

/// The telemetry section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TelemetrySection {
    /// The task-history database, or `off`.
    #[serde(default)]
    pub(crate) task_history: Option<String>,
    #[serde(default)]
    pub(crate) task_history_retention: Option<usize>,
}

impl Config {
    /// Reads and checks `path`.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// Parses `text` (read from `path`, named in errors).
    pub(crate) fn parse(text: &str, path: &Path) -> anyhow::Result<Self> {
        let mut config: Config =
            // The message and its line, never a snippet: neighbouring lines may hold secrets.
            serde_saphyr::from_str(text).map_err(|e| {
                let key = e
                    .location()
                    .and_then(|l| key_on_line(text, l.line()))
                    .map(|k| format!(" (key `{k}`)"))
                    .unwrap_or_default();
                anyhow::anyhow!("{}: {}{key}", path.display(), e.without_snippet())
            })?;
        if config.models.is_empty() {
            bail!(
                "{}: `models` is empty; list at least one model with `from:`",
                path.display()
            );
        }
        let base = path.parent().unwrap_or(Path::new("."));
        for (i, m) in config.models.iter_mut().enumerate() {
            if let Some(t) = &m.params.hf_token {
                m.params.hf_token =
                    Some(secret(t, base).with_context(|| {
                        format!("{}: models[{i}].params.hf_token", path.display())
                    })?);
            }
        }
        if let Some(k) = &config.server.api_key {
            config.server.api_key = Some(
                secret(k, base).with_context(|| format!("{}: server.api_key", path.display()))?,
            );
        }
        Ok(config)
    }
}

/// The key written on line `line` (1-based) of a YAML text, without its value: errors may
/// name it, never show what the line or its neighbours hold.
fn key_on_line(text: &str, line: u64) -> Option<String> {
    let l = text
        .lines()
        .nth(usize::try_from(line).ok()?.checked_sub(1)?)?;
    let key = l.split_once(':')?.0.trim().trim_start_matches("- ").trim();
    let plain = !key.is_empty()
        && key.len() <= 64
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    plain.then(|| key.to_string())
}

/// Expands `${env:VAR}` or `${file:PATH}` (relative to the config file); anything else is
/// refused, so that a secret never sits in the file in clear.
pub(crate) fn secret(value: &str, base: &Path) -> anyhow::Result<String> {
    let value = value.trim();
    if let Some(var) = value
        .strip_prefix("${env:")
        .and_then(|v| v.strip_suffix('}'))
    {
        let v = std::env::var(var).with_context(|| {
            format!("the environment variable {var} (named by ${{env:{var}}}) is not set")
        })?;
        return Ok(v.trim().to_string());
    }
    if let Some(file) = value
        .strip_prefix("${file:")
        .and_then(|v| v.strip_suffix('}'))
    {
        let p = base.join(file);
        let v = std::fs::read_to_string(&p)
            .with_context(|| format!("cannot read the secret file {}", p.display()))?;
        return Ok(v.trim().to_string());
    }
    bail!(
        "a secret must not be written in clear in the config file; use ${{env:VAR}} or ${{file:PATH}}"
    )
}

/// The default served name for a `from`: the reference as written (without the `hf:` /
/// `huggingface:` prefix), or the file or directory stem for a path.
pub(crate) fn default_name(from: &str) -> String {
    let p = PathBuf::from(from);
    if p.exists() {
        return p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| from.to_string());
    }
    from.strip_prefix("huggingface:")
        .or_else(|| from.strip_prefix("hf:"))
        .unwrap_or(from)
        .to_string()
}
