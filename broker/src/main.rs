fn main() -> std::process::ExitCode {
    strata_broker::cli_main()
}
