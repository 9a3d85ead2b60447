//! What every client command shares: the `--broker` flag, running on a glommio executor, and
//! turning client errors into one line a person can act on.

use std::future::Future;

use anyhow::{anyhow, Result};
use tidelog_client::{Client, ClientError};
use tidelog_wire::native::ErrorCode;

/// The broker a client command talks to.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// Broker address (any shard; usually the shared port of `tidelog serve`).
    #[arg(
        long,
        short = 'b',
        value_name = "ADDR",
        default_value = "127.0.0.1:9292"
    )]
    pub broker: String,
}

impl BrokerArgs {
    /// Resolves the address and connects, with a message that says what to do when nothing
    /// listens there.
    pub async fn connect(&self) -> Result<Client> {
        let addr = crate::resolve(&self.broker)?;
        Client::connect(addr)
            .await
            .map_err(|e| explain(e, &self.broker))
    }
}

/// Runs `f` on a glommio executor of its own (client types are `!Send`) and waits for it.
pub fn on_executor<F, Fut, T>(f: F) -> Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>> + 'static,
    T: Send + 'static,
{
    crate::checks::raise_memlock();
    tidelog_engine::runtime::executor_builder(glommio::Placement::Unbound, 1)?
        .name("tidelog-client")
        .spawn(move || async move { f().await })
        .map_err(|e| anyhow!("cannot start the client executor: {e}"))?
        .join()
        .map_err(|e| anyhow!("client executor failed: {e}"))?
}

/// One line for a client error; `broker` is the address the user gave.
pub fn explain(e: ClientError, broker: &str) -> anyhow::Error {
    match &e {
        ClientError::Connect { kind, addr, .. } => {
            let shown = if crate::resolve(broker).ok() == Some(*addr) {
                broker.to_owned()
            } else {
                addr.to_string()
            };
            match kind {
                std::io::ErrorKind::ConnectionRefused => anyhow!(
                    "cannot reach the broker at {shown}: connection refused — is tidelog serve \
                     running?"
                ),
                _ => anyhow!("cannot reach the broker at {shown}: {e}"),
            }
        }
        ClientError::UnknownTopic {
            topic,
            partition: None,
        } => anyhow!("topic {topic} does not exist"),
        ClientError::UnknownTopic {
            topic,
            partition: Some(p),
        } => anyhow!("topic {topic} has no partition {p}"),
        ClientError::Protocol {
            code: ErrorCode::TopicAlreadyExists,
            message,
        } => anyhow!("topic already exists ({message})"),
        ClientError::ConnectionClosed { .. } | ClientError::Io { .. } => {
            anyhow!("lost the connection to the broker at {broker}: {e}")
        }
        _ => anyhow!(e),
    }
}

/// `SocketAddr` of a partition's endpoint (by endpoint id: the shard on a single node), for
/// display.
pub fn endpoint_text(md: &tidelog_client::Metadata, id: u64) -> String {
    md.endpoints
        .get(&id)
        .map_or_else(|| "?".to_owned(), |e| format!("{}:{}", e.host, e.port))
}
