//! A small client of the gateway's admin API, for `canopy purge` and `canopy status`: where the API listens
//! and its token come from the gateway's config.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The admin API of a gateway: its address and bearer token.
#[derive(Debug, Clone)]
pub struct AdminApi {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its token.
    pub token: String,
}

impl AdminApi {
    /// From a gateway config's `[admin]` (`token_file` relative to the config's folder).
    pub fn from_config(config: &Path, cfg: &gateway::GatewayConfig) -> anyhow::Result<Self> {
        let addr = cfg.admin.listen.ok_or_else(|| {
            anyhow::anyhow!(
                "{}: [admin] listen is not set: the gateway has no admin API",
                config.display()
            )
        })?;
        let file = if cfg.admin.token_file.is_absolute() {
            cfg.admin.token_file.clone()
        } else {
            config
                .parent()
                .unwrap_or(Path::new("."))
                .join(&cfg.admin.token_file)
        };
        let token = std::fs::read_to_string(&file)
            .map_err(|e| anyhow::anyhow!("the admin token {}: {e}", file.display()))?
            .trim()
            .to_string();
        Ok(Self { addr, token })
    }

    /// POSTs `body` (JSON) to `path`: the status and the answer's text.
    pub async fn post(&self, path: &str, body: String) -> anyhow::Result<(u16, String)> {
        self.send(http::Method::POST, path, body).await
    }

    /// GETs `path`: the status and the answer's text.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        self.send(http::Method::GET, path, String::new()).await
    }

    async fn send(
        &self,
        method: http::Method,
        path: &str,
        body: String,
    ) -> anyhow::Result<(u16, String)> {
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(self.addr),
        )
        .await
        .map_err(|_| anyhow::anyhow!("the admin API at {} did not answer", self.addr))?
        .map_err(|e| {
            anyhow::anyhow!(
                "the admin API at {}: {e} (is the gateway running?)",
                self.addr
            )
        })?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.addr.to_string())
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let resp = tokio::time::timeout(Duration::from_secs(30), send.send_request(req))
            .await
            .map_err(|_| anyhow::anyhow!("the admin API at {} did not answer", self.addr))??;
        let status = resp.status().as_u16();
        let text = resp.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&text).into_owned()))
    }
}
