//! `meshgate-control`: the control plane binary (thin CLI over the `controlplane` library; see
//! `controlplane::cli` for the commands).

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESHGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = controlplane::cli::Cli::parse();
    match controlplane::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshgate-control: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
