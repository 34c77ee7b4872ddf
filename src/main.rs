fn main() {
    eprintln!("cldpd: the command-line tool is not built yet");
    std::process::exit(1);
}
