//! Raw ethernet frames on one Linux interface: an `AF_PACKET` socket bound to the
//! interface, which sees every frame the interface receives (not those it sends) and sends
//! whole frames out of it. The link emulator's frame bridge (`canopy linkem --bridge A,B`)
//! sits between two interfaces with one of these on each side. Needs root (CAP_NET_RAW).

use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, Socket, Type};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use tokio::io::unix::AsyncFd;

const ETH_P_ALL: u16 = 0x0003;
/// `PACKET_IGNORE_OUTGOING` (Linux 4.20): do not deliver frames this host sends.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// A raw frame socket bound to one interface.
pub struct FrameSocket {
    fd: AsyncFd<Socket>,
    ifname: String,
}

impl FrameSocket {
    /// Opens a frame socket on interface `ifname`.
    pub fn open(ifname: &str) -> io::Result<Self> {
        let ifindex = ifindex(ifname)?;
        let sock = Socket::new(
            Domain::PACKET,
            Type::RAW,
            Some(Protocol::from(i32::from(ETH_P_ALL.to_be()))),
        )?;
        ignore_outgoing(&sock)?;
        sock.bind(&link_addr(ifindex))?;
        sock.set_nonblocking(true)?;
        let _ = sock.set_recv_buffer_size(4 << 20);
        let _ = sock.set_send_buffer_size(4 << 20);
        Ok(Self {
            fd: register(sock)?,
            ifname: ifname.to_string(),
        })
    }

    /// The interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Receives the next frame into `buf`; returns its length.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|s| (&mut s.get_ref()).read(buf)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends one whole frame out of the interface (dropped if the socket buffer is full).
    pub fn try_send(&self, frame: &[u8]) -> io::Result<usize> {
        self.fd.get_ref().send(frame)
    }
}

/// The interface's index, from sysfs.
fn ifindex(ifname: &str) -> io::Result<i32> {
    if ifname.is_empty() || ifname.contains('/') || ifname.contains("..") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    let text = std::fs::read_to_string(format!("/sys/class/net/{ifname}/ifindex"))
        .map_err(|e| io::Error::new(e.kind(), format!("no interface {ifname}: {e}")))?;
    text.trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad ifindex"))
}

/// `sockaddr_ll` of an interface, for bind.
#[allow(unsafe_code)]
fn link_addr(ifindex: i32) -> SockAddr {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: sockaddr_storage is larger and at least as aligned as sockaddr_ll, and all-zero
    // bytes are a valid sockaddr_ll.
    let ll: &mut libc::sockaddr_ll = unsafe { storage.view_as() };
    ll.sll_family = libc::AF_PACKET as libc::sa_family_t;
    ll.sll_protocol = ETH_P_ALL.to_be();
    ll.sll_ifindex = ifindex;
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: the storage holds an initialised sockaddr_ll of `len` bytes.
    unsafe { SockAddr::new(storage, len) }
}

#[allow(unsafe_code)]
fn register(sock: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: the AsyncFd owns the socket, so the descriptor stays open and is not reused
    // while it is registered.
    Ok(unsafe { AsyncFd::register(sock)? })
}

#[allow(unsafe_code)]
fn ignore_outgoing(sock: &Socket) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket, a pointer to a live c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_IGNORE_OUTGOING,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Allocations at least this large get their own mapping (see [`return_large_allocations`]).
pub const MMAP_THRESHOLD: usize = 32 * 1024;

/// Makes glibc's malloc serve allocations of [`MMAP_THRESHOLD`] bytes and more with their
/// own memory mappings, returned to the system when freed, instead of its heaps.
///
/// Media frames and parts (20 KB to a few hundred KB, allocated and freed at frame rate on
/// several threads) otherwise fragment glibc's per-thread heaps: measured with four 4 Mbit/s
/// cameras and 1 MB rings, the gateway's RSS was 58 MB with glibc's defaults and 25 MB with
/// this. (glibc's own default threshold starts at 128 KB and rises with every large block
/// freed, up to 32 MB, which is what lets the heaps grow.) Returns whether it took effect
/// (false on other C libraries).
pub fn return_large_allocations() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets an allocator parameter; any value is accepted or refused.
        #[allow(unsafe_code)]
        let r = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) };
        r == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn missing_interfaces_are_named() {
        let e = super::ifindex("canopy-no-such0").expect_err("no such interface");
        assert!(e.to_string().contains("canopy-no-such0"));
        assert!(super::ifindex("../etc").is_err());
    }
}
