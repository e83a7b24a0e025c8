fn main() {
    std::process::exit(kubexec_runner::cli::main(std::env::args_os()));
}
