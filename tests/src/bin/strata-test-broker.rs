//! The broker's command-line entry point, built inside this crate so that integration tests
//! can run it as a child process via `env!("CARGO_BIN_EXE_strata-test-broker")` (or
//! `strata_tests::broker_binary()`), and kill it with SIGKILL/SIGTERM.

fn main() -> std::process::ExitCode {
    strata_broker::cli_main()
}
