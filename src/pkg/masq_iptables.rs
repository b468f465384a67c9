//! ipMasq with `ipMasqBackend: "iptables"` (bridge, ptp): the reference's own iptables rules
//! (`pkg/ip/ipmasq_linux.go`, `SetupIPMasq`), written over netlink into iptables-nft's `nat`
//! tables, encoded as iptables-nft encodes them (`linux::nft::xt`), so `iptables -t nat -S`
//! shows exactly the reference's and the reference's DEL removes them:
//!
//! ```text
//! -N CNI-<h24(net+cid)>
//! -A POSTROUTING -s 10.1.0.5/32 -m comment --comment "name: \"net\" id: \"cid\"" -j CNI-<h24>
//! -A CNI-<h24> -d 10.1.0.0/24 -m comment --comment "…" -j ACCEPT
//! -A CNI-<h24> ! -d 224.0.0.0/4 -m comment --comment "…" -j MASQUERADE      (v6: ff00::/8)
//! ```
//!
//! Unlike the reference's teardown, ours needs no addresses: the jumps to the attachment's
//! chain are found by their verdict, so DEL works with the netns gone.

use anyhow::{bail, Context, Result};
use ipnet::IpNet;

use super::sha512::hex_prefix;
use crate::linux::nft::xt::{self, IptRule};
use crate::linux::nft::{Batch, Chain, Expr, Family, NftSocket, Position, Rule};
use crate::linux::nft::{Table, Verdict};

pub const TABLE: &str = "nat";
pub const POSTROUTING: &str = "POSTROUTING";

/// `utils.FormatChainName`: `CNI-` and the first 24 hex digits of sha512(network + cid).
pub fn chain_name(network: &str, container_id: &str) -> String {
    format!("CNI-{}", hex_prefix(&format!("{network}{container_id}"), 24))
}

/// `utils.FormatComment`.
pub fn comment(network: &str, container_id: &str) -> String {
    format!("name: \"{network}\" id: \"{container_id}\"")
}

fn family(v6: bool) -> Family {
    if v6 {
        Family::Ip6
    } else {
        Family::Ip
    }
}

/// The rules of one address, in the reference's order: the chain's two, then the jump.
fn rules(t: &Table, chain: &str, comment: &str, ip: IpNet) -> [Rule; 3] {
    let v6 = matches!(ip, IpNet::V6(_));
    let multicast: IpNet = if v6 {
        "ff00::/8".parse().unwrap()
    } else {
        "224.0.0.0/4".parse().unwrap()
    };
    [
        IptRule::new(t, chain)
            .dst(ip.trunc(), false)
            .comment(comment)
            .jump("ACCEPT"),
        IptRule::new(t, chain)
            .dst(multicast, true)
            .comment(comment)
            .target(&xt::masquerade_target(v6)),
        IptRule::new(t, POSTROUTING)
            .src(ip.addr(), false)
            .comment(comment)
            .jump(chain),
    ]
}

/// ADD: per address, the chain (created if missing) and its rules, each added unless already
/// there (`AppendUnique`), the nat table and POSTROUTING created as iptables-nft would.
pub fn setup(sock: &NftSocket, network: &str, container_id: &str, ips: &[IpNet]) -> Result<()> {
    let chain = chain_name(network, container_id);
    let comment = comment(network, container_id);
    // Committed at the generation of the listings (parallel ADDs share POSTROUTING).
    Batch::build_and_commit(sock, Batch::BUSY_RETRIES, |b| -> Result<()> {
        for v6 in [false, true] {
            let mine: Vec<IpNet> = ips
                .iter()
                .copied()
                .filter(|i| matches!(i, IpNet::V6(_)) == v6)
                .collect();
            if !mine.is_empty() {
                queue_family(sock, b, v6, &chain, &comment, &mine)?;
            }
        }
        Ok(())
    })
    .context("failed to set up IP masquerading (iptables)")
}

fn queue_family(sock: &NftSocket, b: &mut Batch, v6: bool, chain: &str, comment: &str, ips: &[IpNet]) -> Result<()> {
    let f = family(v6);
    let t = Table::new(f, TABLE);
    let chains: Vec<String> = sock.list_chains(f, TABLE)?.into_iter().map(|c| c.name).collect();
    if chains.is_empty() && !sock.table_exists(f, TABLE)? {
        b.add_table(&t);
    }
    // Only missing chains are sent: re-adding an existing base chain would reset its policy.
    if !chains.iter().any(|c| c == POSTROUTING) {
        b.add_chain(&Chain::srcnat(&t, POSTROUTING));
    }
    if !chains.iter().any(|c| c == chain) {
        b.add_chain(&Chain::regular(&t, chain));
    }
    let mut have = sock.list_rules(f, TABLE, chain)?;
    have.extend(sock.list_rules(f, TABLE, POSTROUTING)?);
    for ip in ips {
        for r in rules(&t, chain, comment, *ip) {
            if !have
                .iter()
                .any(|h| h.chain == r.chain && xt::same_rule(&h.exprs, &r.exprs))
            {
                b.add_rule(&r, Position::Append);
                have.push(r);
            }
        }
    }
    Ok(())
}

fn jumps_to(r: &Rule, chain: &str) -> bool {
    r.exprs
        .iter()
        .any(|e| matches!(e, Expr::Verdict(Verdict::Jump(c) | Verdict::Goto(c)) if c == chain))
}

/// DEL: every POSTROUTING rule jumping to the attachment's chain, then the chain itself, in
/// both families; missing tables or chains are fine.
pub fn teardown(sock: &NftSocket, network: &str, container_id: &str) -> Result<()> {
    let chain = chain_name(network, container_id);
    let mut b = Batch::new();
    for f in [Family::Ip, Family::Ip6] {
        if !sock.chain_exists(f, TABLE, &chain)? {
            continue;
        }
        let t = Table::new(f, TABLE);
        for r in sock.list_rules(f, TABLE, POSTROUTING)? {
            if jumps_to(&r, &chain) {
                b.del_rule(&t, POSTROUTING, r.handle.unwrap_or_default());
            }
        }
        b.flush_chain(&t, &chain);
        b.del_chain(&t, &chain);
    }
    if !b.is_empty() {
        b.commit(sock).context("failed to remove IP masquerading (iptables)")?;
    }
    Ok(())
}

/// CHECK: every rule of every address is there.
pub fn check(sock: &NftSocket, network: &str, container_id: &str, ips: &[IpNet]) -> Result<()> {
    let chain = chain_name(network, container_id);
    let comment = comment(network, container_id);
    for ip in ips {
        let f = family(matches!(ip, IpNet::V6(_)));
        let t = Table::new(f, TABLE);
        let mut have = sock.list_rules(f, TABLE, &chain)?;
        have.extend(sock.list_rules(f, TABLE, POSTROUTING)?);
        for r in rules(&t, &chain, &comment, *ip) {
            if !have
                .iter()
                .any(|h| h.chain == r.chain && xt::same_rule(&h.exprs, &r.exprs))
            {
                bail!("missing iptables masquerade rule in {f} {TABLE} {} for {ip}", r.chain);
            }
        }
    }
    Ok(())
}

/// The `ipMasqBackend` key of bridge and ptp.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MasqBackend {
    /// No key: our nftables table (`pkg::masquerade`).
    #[default]
    Default,
    Iptables,
    Nftables,
}

impl MasqBackend {
    /// Parses the key's value; anything else is an error, as in the reference.
    pub fn parse(v: Option<&str>) -> Result<MasqBackend, String> {
        match v {
            None | Some("") => Ok(MasqBackend::Default),
            Some("iptables") => Ok(MasqBackend::Iptables),
            Some("nftables") => Ok(MasqBackend::Nftables),
            Some(other) => Err(format!(
                "unknown ipMasqBackend {other:?} (expected \"iptables\" or \"nftables\")"
            )),
        }
    }

    /// For DEL: an unknown value (which ADD refused, or a config edited since) tears down
    /// what either backend could have made.
    pub fn lenient(v: Option<&str>) -> MasqBackend {
        Self::parse(v).unwrap_or(MasqBackend::Iptables)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_reference() {
        // Seen from the reference bridge: network "mynet", container "abc123".
        assert_eq!(chain_name("mynet", "abc123"), "CNI-70a29d9dc18bc4d652ea5d59");
        assert_eq!(comment("mynet", "abc123"), "name: \"mynet\" id: \"abc123\"");
        assert_eq!(MasqBackend::parse(Some("iptables")), Ok(MasqBackend::Iptables));
        assert!(MasqBackend::parse(Some("ipfw")).is_err());
    }
}
