//! Where an uplink's UDP socket comes from: the kernel's, bound as the config says
//! ([`KernelSockets`], always in production), or one an in-process harness hands out on its
//! emulated links, so the whole gateway runs on tokio's paused clock in `cargo test`.

use crate::config::BindTo;
use std::net::SocketAddr;
use std::sync::Arc;

/// Makes the UDP socket of an uplink's next connection.
pub trait UplinkSockets: Send + Sync {
    /// A socket for uplink `name`, bound as `bind` says, to reach `relay`.
    fn socket(
        &self,
        name: &str,
        bind: &BindTo,
        relay: SocketAddr,
    ) -> std::io::Result<Arc<dyn quinn::AsyncUdpSocket>>;
}

/// The kernel's sockets, bound to the uplink's interface or address.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelSockets;

impl UplinkSockets for KernelSockets {
    fn socket(
        &self,
        _name: &str,
        bind: &BindTo,
        relay: SocketAddr,
    ) -> std::io::Result<Arc<dyn quinn::AsyncUdpSocket>> {
        let runtime =
            quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime"))?;
        runtime.wrap_udp_socket(kernel_socket(bind, relay)?)
    }
}

/// A UDP socket bound as the uplink's config says, of the relay address's family.
fn kernel_socket(bind: &BindTo, relay: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let local = match bind {
        BindTo::Addr(a) => *a,
        BindTo::Device(_) if relay.is_ipv6() => SocketAddr::from(([0u16; 8], 0)),
        BindTo::Device(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
    };
    let sock = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))?;
    if let BindTo::Device(dev) = bind {
        sock.bind_device(Some(dev.as_bytes())).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot bind to interface {dev} (needs root or CAP_NET_RAW): {e}"),
            )
        })?;
    }
    sock.bind(&local.into())?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}
