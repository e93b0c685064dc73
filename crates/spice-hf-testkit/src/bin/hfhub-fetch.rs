//! Downloads a repository with the real `hf-hub` crate (the reference client), for the pull
//! benchmark: `hfhub-fetch ENDPOINT ORG/NAME CACHE_DIR`. Prints the snapshot directory.
#![allow(clippy::print_stdout, clippy::print_stderr)] // Reason: a small command-line tool.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, endpoint, repo, cache] = args.as_slice() else {
        eprintln!("usage: hfhub-fetch ENDPOINT ORG/NAME CACHE_DIR");
        return std::process::ExitCode::FAILURE;
    };
    let Some((org, name)) = repo.split_once('/') else {
        eprintln!("repository must be org/name");
        return std::process::ExitCode::FAILURE;
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match rt.block_on(spice_hf_testkit::hfhub::snapshot(
        endpoint,
        org,
        name,
        cache.as_ref(),
    )) {
        Ok(dir) => {
            println!("{}", dir.display());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hf-hub failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
