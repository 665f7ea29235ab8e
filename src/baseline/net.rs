//! Compact keys for networks, user agents and resource types, so per-identity state stores a
//! `u64` where the event had a string.

use std::net::IpAddr;

/// FNV-1a, 64 bit. Hand-written because the keys must be stable across runs and Rust
/// versions (state snapshots outlive a process), which `std`'s hasher does not promise, and
/// the function is five lines.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Tag of IPv4 /24 keys: `0400::/16` is unassigned IPv6 space, so no /64 key collides.
const V4_TAG: u64 = 0x0400_0000_0000_0000;

/// The network an address belongs to: its /24 (IPv4) or /64 (IPv6) prefix, or a hash of the
/// host name when the source gave a name (BALP `network.address` may be one).
pub fn network_key(address: &str) -> u64 {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => V4_TAG | u64::from(u32::from(v4) >> 8),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => V4_TAG | u64::from(u32::from(v4) >> 8),
            None => (u128::from(v6) >> 64) as u64,
        },
        Err(_) => fnv1a(address.to_ascii_lowercase().as_bytes()) | (1 << 63),
    }
}

/// The prefix of `address` as people write it: `203.0.113.0/24`, `2001:db8::/64`, or the name.
pub fn prefix_label(address: &str) -> String {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => prefix_label(&v4.to_string()),
            None => {
                let masked = std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1));
                format!("{masked}/64")
            }
        },
        Err(_) => address.to_ascii_lowercase(),
    }
}

/// Renders a key made by [`network_key`] back as a prefix, where it is an address prefix.
pub fn key_label(key: u64) -> String {
    if key & (1 << 63) != 0 {
        "a host name".to_owned()
    } else if key & 0xffff_0000_0000_0000 == V4_TAG {
        let v4 = std::net::Ipv4Addr::from(((key & 0xff_ffff) as u32) << 8);
        format!("{v4}/24")
    } else {
        format!("{}/64", std::net::Ipv6Addr::from(u128::from(key) << 64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_group_neighbours_and_render_back() {
        assert_eq!(network_key("10.20.3.7"), network_key("10.20.3.200"));
        assert_ne!(network_key("10.20.3.7"), network_key("10.20.4.7"));
        assert_eq!(network_key("::ffff:10.20.3.9"), network_key("10.20.3.7"));
        assert_eq!(network_key("2001:db8:1:2::1"), network_key("2001:db8:1:2:ffff::9"));
        assert_eq!(key_label(network_key("10.20.3.7")), "10.20.3.0/24");
        assert_eq!(key_label(network_key("2001:db8:1:2::1")), "2001:db8:1:2::/64");
        assert_eq!(prefix_label("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_eq!(network_key("Host.Example.org"), network_key("host.example.org"));
        assert_eq!(key_label(network_key("host.example.org")), "a host name");
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
