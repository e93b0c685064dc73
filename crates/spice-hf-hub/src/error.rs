//! The hub client's error type. No message ever contains a token.

/// Everything that can go wrong between a model reference and verified files on disk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model reference cannot be parsed.
    #[error("invalid model reference {input:?}: {reason}; expected [hf:]org/name[@revision]")]
    InvalidRef {
        /// The input, escaped.
        input: String,
        /// What is wrong.
        reason: String,
    },
    /// The revision contains something that is not allowed.
    #[error("invalid revision {revision:?}: {reason}")]
    InvalidRevision {
        /// The revision, escaped.
        revision: String,
        /// What is wrong (names the character).
        reason: String,
    },
    /// A token source holds something unusable (the value is never shown).
    #[error("the Hugging Face token from {source_name} is unusable: {reason}")]
    InvalidTokenValue {
        /// Where it came from.
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The endpoint URL is malformed.
    #[error(
        "invalid hub endpoint {endpoint:?}: {reason}; set HF_ENDPOINT to a URL such as https://huggingface.co"
    )]
    InvalidEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
    /// The repository does not exist, or is private and the token cannot see it.
    #[error("repository {repo} not found{}; check the name, and for a private repository set hf_token (or HF_TOKEN) to a token with read access{}", if *.authenticated { " (with the token given)" } else { " (anonymous request)" }, request_id_suffix(.request_id))]
    RepoNotFound {
        /// The repository.
        repo: String,
        /// Whether a token was sent.
        authenticated: bool,
        /// The server's request id.
        request_id: Option<String>,
    },
    /// The repository is gated and access was not granted.
    #[error("repository {repo} is gated: {}{}", if *.authenticated { "accept its licence on the model page with the account that owns the token, then retry" } else { "set hf_token (or HF_TOKEN) and accept its licence on the model page" }, request_id_suffix(.request_id))]
    Gated {
        /// The repository.
        repo: String,
        /// Whether a token was sent.
        authenticated: bool,
        /// The server's request id.
        request_id: Option<String>,
    },
    /// The token was refused.
    #[error("the hub refused the Hugging Face token (invalid credentials); create a new token with read scope and set hf_token or HF_TOKEN{}", request_id_suffix(.request_id))]
    InvalidToken {
        /// The server's request id.
        request_id: Option<String>,
    },
    /// The token is valid but lacks the permission.
    #[error("access to {what} was forbidden: {message}; check the token's read scope{}", request_id_suffix(.request_id))]
    Forbidden {
        /// What was requested.
        what: String,
        /// The server's message.
        message: String,
        /// The server's request id.
        request_id: Option<String>,
    },
    /// The revision does not exist.
    #[error("revision {revision:?} not found in {repo}; pin a branch, tag or commit that exists{}", request_id_suffix(.request_id))]
    RevisionNotFound {
        /// The repository.
        repo: String,
        /// The revision.
        revision: String,
        /// The server's request id.
        request_id: Option<String>,
    },
    /// A file does not exist at the revision.
    #[error("file {path:?} not found in {repo} at {revision}{}", request_id_suffix(.request_id))]
    EntryNotFound {
        /// The repository.
        repo: String,
        /// The revision or commit.
        revision: String,
        /// The file.
        path: String,
        /// The server's request id.
        request_id: Option<String>,
    },
    /// Any other HTTP error status (after retries where retryable).
    #[error("{what}: HTTP {status}{}{}", if message.is_empty() { String::new() } else { format!(": {message}") }, request_id_suffix(.request_id))]
    Http {
        /// What was requested.
        what: String,
        /// The status code.
        status: u16,
        /// The server's message.
        message: String,
        /// The server's request id.
        request_id: Option<String>,
    },
    /// The network failed (after retries).
    #[error(
        "{what}: {reason} (gave up after {attempts} attempts); check connectivity, HF_ENDPOINT and proxies"
    )]
    Network {
        /// What was requested.
        what: String,
        /// The last error.
        reason: String,
        /// Attempts made.
        attempts: usize,
    },
    /// The server answered something a Hub never would (missing `X-Repo-Commit`, a hostile
    /// path or etag, a commit that is not 40 hex digits, an unparsable listing).
    #[error(
        "the server at {endpoint} does not behave like a Hugging Face Hub: {reason}; check HF_ENDPOINT and any proxy in between"
    )]
    Protocol {
        /// The endpoint.
        endpoint: String,
        /// What it did.
        reason: String,
    },
    /// Offline mode, and the cache lacks something.
    #[error(
        "offline mode (HF_HUB_OFFLINE / --offline): {reason}; run `spice-hf pull {model}` with network access first"
    )]
    Offline {
        /// The model reference.
        model: String,
        /// What is missing.
        reason: String,
    },
    /// A glob in the file selection is malformed, or it selects nothing.
    #[error("file selection: {0}")]
    Selection(String),
    /// The cache refused or failed (unsafe path, verification, lock, space, I/O).
    #[error(transparent)]
    Cache(#[from] spice_hf_cache::Error),
    /// A blocking task of the pull (the cache lock, the space reservation) panicked or was
    /// cancelled with its runtime: a bug or a shutdown, never the repository's fault.
    #[error("the pull's {task} task failed ({reason}); retry, and report it if it persists")]
    Task {
        /// Which task.
        task: &'static str,
        /// The panic or cancellation.
        reason: String,
    },
}

fn request_id_suffix(id: &Option<String>) -> String {
    match id {
        Some(id) => format!(" (request id {id})"),
        None => String::new(),
    }
}

impl Error {
    pub(crate) fn with_token_source(self, source_name: &str) -> Self {
        match self {
            Self::InvalidTokenValue { reason, .. } => Self::InvalidTokenValue {
                source_name: source_name.to_string(),
                reason,
            },
            other => other,
        }
    }
}
