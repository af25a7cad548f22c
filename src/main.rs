//! The `sseloop` binary: load the configuration (flags > environment > file > defaults), start
//! the loop, exit 0 after a graceful shutdown. Exit codes: 0 done, 1 `--check-config` found an
//! error or the loop failed, 2 the server could not start (its configuration included).

use std::process::ExitCode;

use sseloop::config::sources::Sources;
use sseloop::{logging, systemd, Server};

fn main() -> ExitCode {
    let sources = Sources::from_process();
    let loaded = match sources.load() {
        // A command-line mistake: clap prints it with the usage (and --help/--version exit 0).
        Err(e) => e.exit(),
        Ok(Err(e)) => {
            eprintln!("sseloop: {e}");
            // --check-config promises 0 or 1; otherwise a configuration that cannot load is a
            // failure to start (2).
            let checking = std::env::args_os().any(|a| a == "--check-config");
            return ExitCode::from(if checking { 1 } else { 2 });
        }
        Ok(Ok(loaded)) => loaded,
    };
    let config = loaded.config.clone();
    if let Some(what) = &config.generate {
        return generate(what);
    }
    if config.print_config {
        print!("{}", loaded.to_toml());
        return ExitCode::SUCCESS;
    }
    if config.check_config {
        return match Server::check_config(&config) {
            Ok(()) => {
                println!("configuration ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sseloop: {e}");
                ExitCode::FAILURE
            }
        };
    }
    logging::init(config.log_format, config.log_level);
    // Socket activation: the service manager's listening socket, if it handed one over.
    let inherited = match systemd::take_listen_fds() {
        Ok(fds) => {
            if fds.len() > 1 {
                log::warn!("{} sockets inherited; serving the first only", fds.len());
            }
            fds.into_iter().next()
        }
        Err(e) => {
            log::error!("socket activation: {e}");
            return ExitCode::from(2);
        }
    };
    let mut server = match Server::bind_with(config, inherited) {
        Ok(server) => server,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(2);
        }
    };
    server.set_notifier(systemd::Notifier::from_env());
    // SIGHUP reads the file and the environment again, with the same command line.
    server.set_reloader(move || match sources.load() {
        Err(e) => Err(e.to_string().lines().next().unwrap_or("").to_string()),
        Ok(loaded) => loaded.map(|l| l.config).map_err(|e| e.to_string()),
    });
    if let Err(e) = server.handle_signals() {
        log::error!("cannot install signal handlers: {e}");
        return ExitCode::from(2);
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The man page or a completion script, from the same clap definitions as the parser.
fn generate(what: &str) -> ExitCode {
    use clap::CommandFactory;
    use std::io::Write;
    let mut cmd = sseloop::Config::command();
    let mut out = Vec::new();
    if what == "markdown" {
        print!("{}", sseloop::config::sources::options_markdown(&cmd));
        return ExitCode::SUCCESS;
    }
    let shell = match what {
        "man" => None,
        "bash" => Some(clap_complete::Shell::Bash),
        "zsh" => Some(clap_complete::Shell::Zsh),
        "fish" => Some(clap_complete::Shell::Fish),
        _ => return ExitCode::from(2), // the parser only lets the four through
    };
    match shell {
        None => {
            if let Err(e) = clap_mangen::Man::new(cmd).render(&mut out) {
                eprintln!("sseloop: cannot render the man page: {e}");
                return ExitCode::FAILURE;
            }
        }
        Some(shell) => clap_complete::generate(shell, &mut cmd, "sseloop", &mut out),
    }
    match std::io::stdout().write_all(&out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
