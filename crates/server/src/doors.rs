//! The network doors onto a running [`Runtime`]: the HTTP API (OpenAI Images, AUTOMATIC1111, the native job API)
//! and the Ollama gateway. `diffugen serve` and the desktop app open the same ones; the runtime beneath them is
//! started first and outlives them.

use std::net::SocketAddr;

use diffugen_runtime::{Runtime, StartError};

use crate::{AppState, ServerConfig, ServerHandle};

/// Which doors to open, and where.
#[derive(Debug, Clone, Default)]
pub struct DoorsConfig {
    pub server: ServerConfig,
    /// Where the HTTP API listens; `None` for no API.
    pub api_addr: Option<SocketAddr>,
    /// Where the Ollama gateway listens; `None` for no gateway.
    pub gateway_addr: Option<SocketAddr>,
}

/// The open doors.
pub struct Doors {
    pub api: Option<ServerHandle>,
    pub gateway: Option<ServerHandle>,
    /// The handlers' state, for a door that wants to serve the same routes elsewhere.
    pub state: AppState,
}

impl Doors {
    /// Opens the doors `config` asks for over `runtime`. A port that is taken is a [`StartError::Listen`] or
    /// [`StartError::Gateway`], and nothing stays open.
    pub async fn open(runtime: &Runtime, config: DoorsConfig) -> Result<Doors, StartError> {
        let state = AppState::new(runtime.clone(), &config.server);
        let api = match config.api_addr {
            Some(addr) => Some(
                crate::serve(addr, state.clone())
                    .await
                    .map_err(|source| StartError::Listen { addr, source })?,
            ),
            None => None,
        };
        let gateway = match (config.gateway_addr, runtime.orchestrator()) {
            (Some(addr), Some(orchestrator)) => {
                let access = crate::gateway::Access {
                    api_key: config.server.api_key.as_deref().map(Into::into),
                    allowed_hosts: config.server.allowed_hosts.clone(),
                };
                match crate::gateway::serve_with(addr, orchestrator.clone(), access).await {
                    Ok(gateway) => Some(gateway),
                    Err(source) => {
                        if let Some(api) = api {
                            let _ = api.shutdown().await;
                        }
                        return Err(StartError::Gateway { addr, source });
                    }
                }
            }
            (Some(addr), None) => {
                tracing::warn!(%addr, "no Ollama gateway: this runtime does not orchestrate VRAM");
                None
            }
            (None, _) => None,
        };
        Ok(Doors {
            api,
            gateway,
            state,
        })
    }

    /// No network door: the runtime alone (the app with its API switched off).
    pub fn closed(runtime: &Runtime) -> Doors {
        Doors {
            api: None,
            gateway: None,
            state: AppState::new(runtime.clone(), &ServerConfig::default()),
        }
    }

    /// Stops listening and lets requests in flight finish.
    pub async fn close(self) -> std::io::Result<()> {
        if let Some(api) = self.api {
            api.shutdown().await?;
        }
        if let Some(gateway) = self.gateway {
            gateway.shutdown().await?;
        }
        Ok(())
    }
}
