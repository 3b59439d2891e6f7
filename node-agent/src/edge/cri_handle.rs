//! The one CRI connection the agent's loops share. The config loop switches it
//! when `spec.runtime.criEndpoint` changes (after checking the new endpoint
//! answers); the other loops read the current one at each use and wake up
//! when it changes.

use tokio::sync::watch;

use crate::edge::cri::CriClient;

/// Switches the shared connection (held by the config loop).
#[derive(Debug)]
pub struct CriSwitch {
    tx: watch::Sender<CriClient>,
}

/// Reads the shared connection (held by every loop that talks CRI).
#[derive(Clone, Debug)]
pub struct CriHandle {
    rx: watch::Receiver<CriClient>,
}

/// A shared connection starting at `initial`.
pub fn shared(initial: CriClient) -> (CriSwitch, CriHandle) {
    let (tx, rx) = watch::channel(initial);
    (CriSwitch { tx }, CriHandle { rx })
}

impl CriSwitch {
    /// Makes `client` the connection every loop uses from now on.
    pub fn switch(&self, client: CriClient) {
        tracing::info!(from = %self.endpoint(), to = %client.endpoint(), "switching CRI endpoint");
        self.tx.send_replace(client);
    }

    /// The endpoint in use.
    pub fn endpoint(&self) -> String {
        self.tx.borrow().endpoint().to_string()
    }
}

impl CriHandle {
    /// The connection in use now (cheap: clients share the channel).
    pub fn current(&self) -> CriClient {
        self.rx.borrow().clone()
    }

    /// Waits until the connection is switched; errs when the switch is gone (shutdown).
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.rx.changed().await
    }
}
