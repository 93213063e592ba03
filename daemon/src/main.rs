//! `outpostd`: the Outpost edge gateway daemon (see the library).

fn main() -> std::process::ExitCode {
    outpost_daemon::main()
}
