//! FIB policy-routing rules (`ip rule`).

use ipnet::IpNet;

use super::addr::IpFamily;
use super::wire::{attrs, get_ip, get_str, get_u32, Payload};
use super::{Mode, Netlink};
use crate::linux::Result;

const RTM_NEWRULE: u16 = 32;
const RTM_DELRULE: u16 = 33;
const RTM_GETRULE: u16 = 34;
const FRA_DST: u16 = 1;
const FRA_SRC: u16 = 2;
const FRA_IIFNAME: u16 = 3;
const FRA_PRIORITY: u16 = 6;
const FRA_TABLE: u16 = 15;
const FRA_OIFNAME: u16 = 17;
const FR_ACT_TO_TBL: u8 = 1;

/// A rule "from `src` to `dst` \[iif\] \[oif\] lookup `table`".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Address family (V4 or V6).
    pub family: IpFamily,
    /// Priority (None: let the kernel choose).
    pub priority: Option<u32>,
    /// Table to look up.
    pub table: u32,
    /// Source prefix.
    pub src: Option<IpNet>,
    /// Destination prefix.
    pub dst: Option<IpNet>,
    /// Input interface name.
    pub iif: Option<String>,
    /// Output interface name.
    pub oif: Option<String>,
}

impl Rule {
    /// A rule sending everything of `family` to `table`.
    pub fn new(family: IpFamily, table: u32) -> Rule {
        Rule {
            family,
            priority: None,
            table,
            src: None,
            dst: None,
            iif: None,
            oif: None,
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let table8 = if self.table < 256 { self.table as u8 } else { 0 };
        let h = [
            self.family.af(),
            self.dst.map_or(0, |d| d.prefix_len()),
            self.src.map_or(0, |s| s.prefix_len()),
            0,
            table8,
            0,
            0,
            FR_ACT_TO_TBL,
            0,
            0,
            0,
            0,
        ];
        let mut p = Payload::new(&h);
        p.u32(FRA_TABLE, self.table);
        if let Some(v) = self.priority {
            p.u32(FRA_PRIORITY, v);
        }
        if let Some(s) = self.src {
            p.ip(FRA_SRC, s.network());
        }
        if let Some(d) = self.dst {
            p.ip(FRA_DST, d.network());
        }
        if let Some(i) = &self.iif {
            p.str(FRA_IIFNAME, i);
        }
        if let Some(o) = &self.oif {
            p.str(FRA_OIFNAME, o);
        }
        p.into_bytes()
    }

    pub(crate) fn parse(b: &[u8]) -> Option<Rule> {
        if b.len() < 12 {
            return None;
        }
        let family = match b[0] as i32 {
            nix::libc::AF_INET => IpFamily::V4,
            nix::libc::AF_INET6 => IpFamily::V6,
            _ => return None,
        };
        let mut r = Rule::new(family, b[4] as u32);
        for (ty, d) in attrs(&b[12..]) {
            match ty {
                FRA_TABLE => r.table = get_u32(d)?,
                FRA_PRIORITY => r.priority = get_u32(d),
                FRA_SRC => r.src = IpNet::new(get_ip(d)?, b[2]).ok(),
                FRA_DST => r.dst = IpNet::new(get_ip(d)?, b[1]).ok(),
                FRA_IIFNAME => r.iif = Some(get_str(d)),
                FRA_OIFNAME => r.oif = Some(get_str(d)),
                _ => {}
            }
        }
        Some(r)
    }

    fn describe(&self) -> String {
        let mut s = String::from("rule");
        if let Some(p) = self.priority {
            s += &format!(" pref {p}");
        }
        if let Some(x) = self.src {
            s += &format!(" from {x}");
        }
        if let Some(x) = self.dst {
            s += &format!(" to {x}");
        }
        s + &format!(" lookup {}", self.table)
    }
}

impl Netlink {
    /// Adds a rule; EEXIST if an equal one exists.
    pub fn add_rule(&mut self, r: &Rule) -> Result<()> {
        let what = || format!("add {}", r.describe());
        self.request(RTM_NEWRULE, Mode::Create, r.encode(), &what)?;
        Ok(())
    }

    /// Deletes the rule matching `r`.
    pub fn del_rule(&mut self, r: &Rule) -> Result<()> {
        let what = || format!("delete {}", r.describe());
        self.request(RTM_DELRULE, Mode::Change, r.encode(), &what)?;
        Ok(())
    }

    /// Rules of `family` (V4 or V6).
    pub fn rules(&mut self, family: IpFamily) -> Result<Vec<Rule>> {
        let h = [family.af(), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let msgs = self.dump(RTM_GETRULE, Payload::new(&h).into_bytes(), &|| "list rules".to_string())?;
        Ok(msgs.iter().filter_map(|m| Rule::parse(m)).collect())
    }

    /// Rules of both families, IPv4 first.
    pub fn all_rules(&mut self) -> Result<Vec<Rule>> {
        let mut rules = self.rules(IpFamily::V4)?;
        rules.extend(self.rules(IpFamily::V6)?);
        Ok(rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_roundtrip() {
        let mut r = Rule::new(IpFamily::V4, 100);
        r.priority = Some(1000);
        r.src = Some("10.1.0.0/16".parse().unwrap());
        r.iif = Some("eth0".into());
        assert_eq!(Rule::parse(&r.encode()).unwrap(), r);
    }
}
