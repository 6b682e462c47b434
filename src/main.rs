use clap::Parser;

fn main() {
    // Before anything is created: every local file is root's alone.
    swiftgate::secure::restrict_umask();
    // Each FUSE thread holds a 16 MiB request buffer (zeroed, mostly never
    // touched). glibc raises its mmap threshold to the largest block ever
    // freed, so after one such buffer is freed the next come from the heap
    // and calloc touches all 16 MiB: a gateway's idle home cost 32 MiB
    // resident instead of 1. A fixed threshold keeps them untouched mmaps,
    // given back to the system when a home unmounts; blocks and objects
    // (up to 16 MiB) stay on the heap.
    // SAFETY: mallopt only tunes the allocator; called before any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 16 << 20);
    }
    let cli = swiftgate::cli::Cli::parse();
    // Colour only for a person at a terminal: a mount that goes to the
    // background writes to its log file through this same subscriber.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && !cli.cmd.detaches();
    tracing_subscriber::fmt()
        .with_ansi(ansi)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWIFTGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // A failed log write (a full log disk) must not become a panic:
        // the subscriber would report it with eprintln!, which panics.
        .log_internal_errors(false)
        .init();
    match swiftgate::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // One line: the chain of causes, outermost first.
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("swiftgate: {}", msg.join(": "));
            std::process::exit(1);
        }
    }
}
