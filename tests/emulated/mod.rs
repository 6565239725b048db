//! In-process testbeds over the link emulator (no root), shared by the tests that bond two
//! emulated uplinks: a 6 Mbit/s and a 3 Mbit/s one, and an HTTP/1.1 client of the proxy.

use canopy::linkem::LinkProfile;
use canopy::testbed::{TestLink, Testbed, TestbedOptions};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;

/// A relay, gateway and origin over two emulated uplinks: "fast" (6 Mbit/s, 15 ms one
/// way) and "slow" (3 Mbit/s, 10 ms), in that order.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub(crate) async fn two_links() -> Testbed {
    two_links_with(|_| {}).await
}

/// [`two_links`], with changes to the gateway's `[proxy]` section.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub(crate) async fn two_links_with(proxy: fn(&mut gateway::config::ProxySection)) -> Testbed {
    Testbed::start(TestbedOptions {
        links: vec![
            TestLink::new("fast", Some(LinkProfile::symmetric("fast", 6_000, 15, 100))),
            TestLink::new("slow", Some(LinkProfile::symmetric("slow", 3_000, 10, 100))),
        ],
        gateway_proxy: proxy,
        ..TestbedOptions::single(None)
    })
    .await
    .expect("testbed")
}

/// A new HTTP/1.1 connection to the proxy at `proxy`.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub(crate) async fn http1<B>(proxy: SocketAddr) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(proxy)
        .await
        .expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}
