fn main() {
    eprintln!("sseloop-load: not built yet");
    std::process::exit(2);
}
