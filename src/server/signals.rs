//! The process signals: SIGTERM or SIGINT begin a graceful shutdown (a
//! second one ends it at once), SIGHUP reloads the config.

use super::Running;

impl Running {
    /// Serves until a shutdown signal's graceful stop is over.
    pub async fn serve_signals(mut self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut stopping = false;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the config");
                    let _ = self.control.reload();
                    continue;
                }
                _ = self.finished(), if stopping => return Ok(()),
            }
            if stopping {
                tracing::warn!("second shutdown signal: closing every connection now");
                self.shutdown_now();
                self.finished().await;
                return Ok(());
            }
            tracing::info!("shutdown signal: readiness fails, listeners close, requests finish");
            self.begin_shutdown();
            stopping = true;
        }
    }
}
