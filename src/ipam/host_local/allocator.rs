//! One range set's allocator (backend/allocator/allocator.go): a requested address, or the
//! next free one in round-robin order, with the reference's error texts.

use super::range::{canon, RangeIter, RangeSet};
use super::store::Store;
use ipnet::IpNet;
use std::net::IpAddr;

pub struct Allocator<'a> {
    pub set: &'a RangeSet,
    pub store: &'a Store,
    /// The range set's index: names `last_reserved_ip.<id>`.
    pub id: usize,
}

/// An address handed out, with its subnet's prefix and the range's gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub address: IpNet,
    pub gateway: IpAddr,
}

impl Allocator<'_> {
    /// Allocate for (id, ifname). The caller holds the store's lock.
    pub fn get(&self, id: &str, ifname: &str, requested: Option<IpAddr>) -> Result<Allocation, String> {
        let io = |e: std::io::Error| e.to_string();
        if let Some(req) = requested.map(canon) {
            let Some(r) = self.set.range_for(req) else {
                return Err(format!("{req} not in range set {}", self.set));
            };
            if req == r.gateway {
                return Err(format!("requested ip {req} is subnet's gateway"));
            }
            if !self.store.reserve(id, ifname, req, self.id).map_err(io)? {
                return Err(format!(
                    "requested IP address {req} is not available in range set {}",
                    self.set
                ));
            }
            return Ok(Allocation {
                address: IpNet::new(req, r.subnet.prefix_len()).expect("prefix from a valid subnet"),
                gateway: r.gateway,
            });
        }
        // A second ADD for the same attachment is an error (the spec forbids duplicates).
        for held in self.store.get_by_id(id, ifname) {
            if self.set.contains(held) {
                return Err(format!(
                    "{held} has been allocated to {id}, duplicate allocation is not allowed"
                ));
            }
        }
        let pending = self.store.pending(id, ifname).map_err(io)?;
        for (ip, r) in RangeIter::new(self.set, self.store.last_reserved(self.id)) {
            // Held by the index's account: skip the link(2) that would fail with EEXIST.
            if self.store.known_taken(ip) {
                continue;
            }
            if pending.claim(ip, self.id).map_err(io)? {
                return Ok(Allocation {
                    address: IpNet::new(ip, r.subnet.prefix_len()).expect("prefix from a valid subnet"),
                    gateway: r.gateway,
                });
            }
        }
        Err(format!("no IP addresses available in range set: {}", self.set))
    }
}

#[cfg(test)]
mod tests {
    use super::super::range::RawRange;
    use super::*;
    use std::fs;

    fn set(subnet: &str) -> RangeSet {
        RangeSet::canonicalize(&[RawRange {
            subnet: Some(subnet.parse().unwrap()),
            ..Default::default()
        }])
        .unwrap()
    }

    fn with_store(tag: &str, f: impl FnOnce(&Store, &std::path::Path)) {
        let d = std::env::temp_dir().join(format!("cni-multi-alloc-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        let s = Store::open(d.to_str().unwrap(), "net").unwrap();
        f(&s, &d.join("net"));
        drop(s);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn fresh_round_robin_wrap_and_full() {
        let d = std::env::temp_dir().join(format!("cni-multi-alloc-rr-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        let dir = d.join("net");
        let set = set("10.0.0.0/29");
        {
            let store = Store::open(d.to_str().unwrap(), "net").unwrap();
            let a = Allocator {
                set: &set,
                store: &store,
                id: 0,
            };
            let got: Vec<String> = (0..5)
                .map(|i| a.get(&format!("c{i}"), "eth0", None).unwrap().address.to_string())
                .collect();
            assert_eq!(
                got,
                [
                    "10.0.0.2/29",
                    "10.0.0.3/29",
                    "10.0.0.4/29",
                    "10.0.0.5/29",
                    "10.0.0.6/29"
                ]
            );
            assert_eq!(
                a.get("c9", "eth0", None).unwrap_err(),
                "no IP addresses available in range set: 10.0.0.1-10.0.0.6"
            );
        }
        // Removed behind the index's back (as another implementation would, between two
        // locked operations): the next open sees the directory changed and rebuilds.
        fs::remove_file(dir.join("10.0.0.3")).unwrap();
        fs::remove_file(dir.join("10.0.0.5")).unwrap();
        let store = Store::open(d.to_str().unwrap(), "net").unwrap();
        let a = Allocator {
            set: &set,
            store: &store,
            id: 0,
        };
        // last reserved is .6: the next lap starts at the range start and finds .3 first.
        assert_eq!(a.get("c10", "eth0", None).unwrap().address.to_string(), "10.0.0.3/29");
        assert_eq!(a.get("c11", "eth0", None).unwrap().address.to_string(), "10.0.0.5/29");
        drop(store);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn requested_gateway_duplicate() {
        with_store("req", |store, _| {
            let set = set("10.0.0.0/24");
            let a = Allocator {
                set: &set,
                store,
                id: 0,
            };
            let ip = |s: &str| Some(s.parse().unwrap());
            assert_eq!(
                a.get("c1", "eth0", ip("10.0.0.9")).unwrap().address.to_string(),
                "10.0.0.9/24"
            );
            assert_eq!(
                a.get("c2", "eth0", ip("10.0.0.9")).unwrap_err(),
                "requested IP address 10.0.0.9 is not available in range set 10.0.0.1-10.0.0.254"
            );
            assert_eq!(
                a.get("c2", "eth0", ip("10.0.0.1")).unwrap_err(),
                "requested ip 10.0.0.1 is subnet's gateway"
            );
            assert_eq!(
                a.get("c1", "eth0", None).unwrap_err(),
                "10.0.0.9 has been allocated to c1, duplicate allocation is not allowed"
            );
            assert_eq!(a.get("c1", "eth1", None).unwrap().address.to_string(), "10.0.0.10/24");
        });
    }
}
