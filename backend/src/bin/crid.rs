//! `crid`: a Kubernetes CRI runtime service on top of containerd.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use crid_backend::daemon::{self, DaemonConfig};

#[derive(Parser, Debug)]
#[command(name = "crid", version, about = "Kubernetes CRI runtime service on containerd")]
struct Args {
    /// TOML configuration file; without it the built-in defaults are used.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match DaemonConfig::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("crid: refusing to start: {}", e.message);
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        match toml::to_string_pretty(&config) {
            Ok(text) => {
                print!("{text}");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("crid: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    daemon::init_logging(&config);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        builder.worker_threads(config.worker_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("crid: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e.message, "crid failed");
            eprintln!("crid: refusing to start or stopped on error: {}", e.message);
            ExitCode::FAILURE
        }
    }
}
