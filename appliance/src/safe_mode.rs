//! Safe mode: what `screenline run` does with a configuration it cannot use.

use crate::config::ConfigError;
use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// With an invalid configuration nothing touches the line: the controllers hear no heartbeat
/// and divert every parcel to manual inspection, while the console shows what to fix. It
/// listens where the file asks if that much can be read, else on 127.0.0.1:8080, and takes
/// its users from the data folder the file names, else the default one.
pub async fn run(path: &Path, e: ConfigError) -> anyhow::Result<()> {
    tracing::error!(error = %e, "configuration invalid: safe mode, console only");
    /// What safe mode needs of a file that is otherwise invalid: where to listen, where the
    /// store is. Each falls back to its default where even it cannot be read.
    #[derive(serde::Deserialize, Default)]
    struct Salvage {
        #[serde(default)]
        console: SalvageConsole,
        data_dir: Option<PathBuf>,
    }
    #[derive(serde::Deserialize, Default)]
    struct SalvageConsole {
        listen: Option<SocketAddr>,
    }
    let salvage: Salvage = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| toml::from_str(&t).ok())
        .unwrap_or_default();
    let listen = salvage
        .console
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let data_dir = salvage
        .data_dir
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_DATA_DIR));
    eprintln!("error: {e}\nStarting the console in safe mode on {listen}; the lines divert every parcel until the configuration is fixed.");
    let telemetry = std::sync::Arc::new(crate::telemetry::Telemetry::default());
    telemetry.link(crate::telemetry::Link::Config, false, e.to_string());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("safe-mode console on {listen}"))?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let console =
        crate::console::Console::safe_mode(telemetry, data_dir, e.to_string(), shutdown.clone());
    let mut server = tokio::spawn(crate::console::serve(
        listener,
        std::sync::Arc::new(console),
        shutdown.clone(),
    ));
    // Up and serving: systemd may count the start done, and the watchdog is fed while the
    // console lives (in safe mode it is the whole appliance).
    crate::supervise::sd_notify::notify("READY=1");
    let ping = crate::supervise::sd_notify::watchdog_interval().map(|w| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(w / 3);
            loop {
                tick.tick().await;
                crate::supervise::sd_notify::notify("WATCHDOG=1");
            }
        })
    });
    let server_ended = tokio::select! {
        () = crate::supervise::stop_signal() => false,
        _ = &mut server => true,
    };
    crate::supervise::sd_notify::notify("STOPPING=1");
    if let Some(p) = ping {
        p.abort();
    }
    if server_ended {
        bail!("the safe-mode console ended; the configuration is invalid: {e}")
    }
    // Stopped as asked (systemctl stop, Ctrl-C): a clean exit, so systemd does not count a
    // stop in safe mode as a failure. The errors were shown while it ran.
    shutdown.cancel();
    let _ = server.await;
    tracing::info!("safe mode stopped");
    Ok(())
}
