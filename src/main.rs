fn main() {
    std::process::exit(ckpt_cli::main());
}
