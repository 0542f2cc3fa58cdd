//! Packet sockets: type and protocol, PACKET_VERSION, bound interface
//! (by index: the interface must exist here), memberships, fanout group,
//! options and filter, then its rings' geometry (mem/vmas.rs maps them
//! again where the process had them); queued packets and the frames in
//! the rings were dropped.

use super::sockets::{apply_opts, Prebuilt};
use super::Builder;
use ckpt_image::{PacketRing, PacketSocket, SockOpt};
use ckpt_sys::fds::socket;
use ckpt_sys::fds::sockopt::Phase;
use std::os::fd::{AsRawFd, OwnedFd};

const SOL_PACKET: i32 = 263;
const PACKET_ADD_MEMBERSHIP: i32 = 1;
const PACKET_VERSION: i32 = 10;
const PACKET_FANOUT: i32 = 18;
const PACKET_RX_RING: i32 = 5;
const PACKET_TX_RING: i32 = 13;
/// The obsolete socket type of AF_PACKET bound by device name.
const SOCK_PACKET: i32 = 10;

/// One packet socket for the restorer to build.
#[derive(Debug, Clone, PartialEq)]
pub struct PacketSpec {
    pub ty: i32,
    /// Ethertype, network order (as socket() and sockaddr_ll take it).
    pub protocol: u16,
    pub ifindex: i32,
    pub version: u32,
    pub fanout: u32,
    /// (ifindex, type, address).
    pub memberships: Vec<(i32, u16, Vec<u8>)>,
    pub opts: Vec<SockOpt>,
    pub rx_ring: Option<PacketRing>,
    pub tx_ring: Option<PacketRing>,
}

pub(super) fn plan(b: &mut Builder, g: usize, p: &PacketSocket) {
    let what = b.what(g);
    if p.dropped_queue > 0 {
        b.warning(format!(
            "{what}: {} bytes of queued packets were dropped",
            p.dropped_queue
        ));
    }
    if p.memberships.iter().any(|m| m.address.len() > 8) {
        b.error(format!(
            "{what}: a packet membership address longer than 8 bytes"
        ));
        return;
    }
    b.prebuilt(
        g,
        Prebuilt::Packet(PacketSpec {
            ty: p.sock_type as i32,
            protocol: p.protocol,
            ifindex: p.ifindex,
            version: p.version,
            fanout: p.fanout,
            memberships: p
                .memberships
                .iter()
                .map(|m| (m.ifindex, m.mr_type, m.address.clone()))
                .collect(),
            opts: p.options.clone(),
            rx_ring: p.rx_ring,
            tx_ring: p.tx_ring,
        }),
    );
}

/// PACKET_RX_RING / PACKET_TX_RING with the saved geometry: a
/// tpacket_req3 for TPACKET_V3, a tpacket_req before.
fn set_ring(fd: i32, opt: i32, r: &PacketRing, version: u32) -> ckpt_sys::Result<()> {
    const TPACKET_V3: u32 = 2;
    let mut words = vec![r.block_size, r.block_nr, r.frame_size, r.frame_nr];
    if version == TPACKET_V3 {
        words.extend([r.retire_tmo, r.sizeof_priv, r.features]);
    }
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    socket::setsockopt_bytes(fd, SOL_PACKET, opt, &bytes)
}

pub(super) fn make(s: &PacketSpec) -> Result<OwnedFd, String> {
    let sock =
        socket::socket(libc::AF_PACKET, s.ty, i32::from(s.protocol)).map_err(|e| e.to_string())?;
    let fd = sock.as_raw_fd();
    if s.version != 0 {
        socket::setsockopt_int(fd, SOL_PACKET, PACKET_VERSION, s.version as i32)
            .map_err(|e| format!("PACKET_VERSION: {e}"))?;
    }
    apply_opts(fd, &s.opts, Phase::PreBind)?;
    if s.ifindex != 0 && s.ty == SOCK_PACKET {
        // The obsolete SOCK_PACKET binds by name (struct sockaddr_pkt:
        // family, device name in 14 bytes, protocol).
        let name = socket::interface_name(s.ifindex as u32)
            .filter(|n| n.len() < 14)
            .ok_or_else(|| format!("interface {} does not exist here", s.ifindex))?;
        let mut sa = [0u8; 16];
        sa[..2].copy_from_slice(&(libc::AF_PACKET as u16).to_ne_bytes());
        sa[2..2 + name.len()].copy_from_slice(&name);
        socket::bind_raw(fd, &sa)
            .map_err(|e| format!("binding to interface {}: {e}", s.ifindex))?;
    } else if s.ifindex != 0 {
        // struct sockaddr_ll: family, protocol, ifindex, the rest zero.
        let mut sa = [0u8; 20];
        sa[..2].copy_from_slice(&(libc::AF_PACKET as u16).to_ne_bytes());
        sa[2..4].copy_from_slice(&s.protocol.to_ne_bytes());
        sa[4..8].copy_from_slice(&s.ifindex.to_ne_bytes());
        socket::bind_raw(fd, &sa)
            .map_err(|e| format!("binding to interface {}: {e}", s.ifindex))?;
    }
    for (ifindex, ty, addr) in &s.memberships {
        // struct packet_mreq: ifindex, type, alen, address[8].
        let mut m = [0u8; 16];
        m[..4].copy_from_slice(&ifindex.to_ne_bytes());
        m[4..6].copy_from_slice(&ty.to_ne_bytes());
        m[6..8].copy_from_slice(&(addr.len() as u16).to_ne_bytes());
        m[8..8 + addr.len()].copy_from_slice(addr);
        socket::setsockopt_bytes(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &m)
            .map_err(|e| format!("PACKET_ADD_MEMBERSHIP: {e}"))?;
    }
    if s.fanout != 0 {
        socket::setsockopt_int(fd, SOL_PACKET, PACKET_FANOUT, s.fanout as i32)
            .map_err(|e| format!("PACKET_FANOUT: {e}"))?;
    }
    apply_opts(fd, &s.opts, Phase::Post)?;
    // Last: a ring fixes PACKET_VERSION, PACKET_RESERVE and
    // PACKET_TX_HAS_OFF (EBUSY once it is set).
    for (name, opt, ring) in [
        ("RX", PACKET_RX_RING, &s.rx_ring),
        ("TX", PACKET_TX_RING, &s.tx_ring),
    ] {
        if let Some(r) = ring {
            set_ring(fd, opt, r, s.version).map_err(|e| format!("PACKET_{name}_RING: {e}"))?;
        }
    }
    Ok(sock)
}
