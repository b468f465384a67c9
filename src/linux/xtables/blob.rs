//! The wire format of an x_tables table: `ipt_getinfo`, the entries blob of
//! `IPT_SO_GET_ENTRIES` / `IPT_SO_SET_REPLACE` (`ipt_entry`/`ip6t_entry`, each followed by its
//! `xt_entry_match`es and one `xt_entry_target`, everything 8-byte aligned), and the
//! `ipt_replace` / `xt_counters_info` headers. Pure: decoded into and encoded from the
//! [`Table`] model, unit-tested without a kernel. Layouts are x86_64/aarch64 Linux's (the
//! structs have no pointer-size dependent member except `ipt_replace.counters`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ext::cstr;
use super::model::{Addr, Chain, Counters, Iface, Policy, Rule, Table, Target};
use super::{Family, HOOKS};
use crate::linux::nft::xt::{Xt, XtKind};

pub const NUM_HOOKS: usize = 5;
/// `XT_TABLE_MAXNAMELEN`.
pub const TABLE_NAME_LEN: usize = 32;
/// `sizeof(struct ipt_getinfo)`.
pub const INFO_LEN: usize = 84;
/// `sizeof(struct ipt_get_entries)` (the entries follow, 8-aligned).
pub const GET_ENTRIES_HDR: usize = 40;
/// `sizeof(struct ipt_replace)` on 64-bit (its `counters` pointer is at 88).
pub const REPLACE_HDR: usize = 96;
/// `sizeof(struct xt_counters_info)` (the counters follow, 8-aligned).
pub const COUNTERS_INFO_HDR: usize = 40;
/// `sizeof(struct xt_counters)`.
pub const COUNTERS_LEN: usize = 16;

/// `sizeof(struct xt_entry_match)` = `sizeof(struct xt_entry_target)`.
const EXT_HDR: usize = 32;
/// `XT_EXTENSION_MAXNAMELEN`: the name field of a match or target.
const EXT_NAME_LEN: usize = 29;
/// `XT_ALIGN(sizeof(struct xt_standard_target))`.
const STANDARD_SIZE: usize = 40;
/// `XT_ALIGN(sizeof(struct xt_error_target))`.
const ERROR_SIZE: usize = 64;
const ERROR_NAME: &str = "ERROR";

/// Standard verdicts as stored (`-NF_* - 1`; `XT_RETURN` is `-NF_REPEAT - 1`).
const V_DROP: i32 = -1;
const V_ACCEPT: i32 = -2;
const V_RETURN: i32 = -5;

/// `XT_ALIGN`.
pub fn align(n: usize) -> usize {
    (n + 7) & !7
}

/// Where the fields of an entry are, per family (`struct ipt_entry` / `struct ip6t_entry`).
struct Shape {
    alen: usize,
    src: usize,
    dst: usize,
    smsk: usize,
    dmsk: usize,
    iniface: usize,
    outiface: usize,
    iniface_mask: usize,
    outiface_mask: usize,
    proto: usize,
    tos: Option<usize>,
    flags: usize,
    invflags: usize,
    nfcache: usize,
    target_offset: usize,
    next_offset: usize,
    counters: usize,
    size: usize,
    /// `IPT_F_GOTO` / `IP6T_F_GOTO`.
    goto: u8,
}

const V4: Shape = Shape {
    alen: 4,
    src: 0,
    dst: 4,
    smsk: 8,
    dmsk: 12,
    iniface: 16,
    outiface: 32,
    iniface_mask: 48,
    outiface_mask: 64,
    proto: 80,
    tos: None,
    flags: 82,
    invflags: 83,
    nfcache: 84,
    target_offset: 88,
    next_offset: 90,
    counters: 96,
    size: 112,
    goto: 0x02,
};

const V6: Shape = Shape {
    alen: 16,
    src: 0,
    dst: 16,
    smsk: 32,
    dmsk: 48,
    iniface: 64,
    outiface: 80,
    iniface_mask: 96,
    outiface_mask: 112,
    proto: 128,
    tos: Some(130),
    flags: 131,
    invflags: 132,
    nfcache: 136,
    target_offset: 140,
    next_offset: 142,
    counters: 152,
    size: 168,
    goto: 0x04,
};

fn shape(f: Family) -> &'static Shape {
    match f {
        Family::V4 => &V4,
        Family::V6 => &V6,
    }
}

/// `sizeof(struct ipt_entry)` or `ip6t_entry`.
pub fn entry_len(f: Family) -> usize {
    shape(f).size
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().unwrap())
}

fn put_name(b: &mut [u8], name: &str) {
    let n = name.len().min(b.len() - 1);
    b[..n].copy_from_slice(&name.as_bytes()[..n]);
}

/// `struct ipt_getinfo` (the same as `ip6t_getinfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    pub name: String,
    pub valid_hooks: u32,
    pub hook_entry: [u32; NUM_HOOKS],
    pub underflow: [u32; NUM_HOOKS],
    pub num_entries: u32,
    pub size: u32,
}

impl Info {
    /// The request buffer: the table's name, the rest filled by the kernel.
    pub fn request(name: &str) -> Vec<u8> {
        let mut b = vec![0u8; INFO_LEN];
        put_name(&mut b[..TABLE_NAME_LEN], name);
        b
    }

    pub fn parse(b: &[u8]) -> Option<Info> {
        if b.len() < INFO_LEN {
            return None;
        }
        let arr = |at: usize| std::array::from_fn(|i| u32_at(b, at + 4 * i));
        Some(Info {
            name: cstr(&b[..TABLE_NAME_LEN]),
            valid_hooks: u32_at(b, 32),
            hook_entry: arr(36),
            underflow: arr(56),
            num_entries: u32_at(b, 76),
            size: u32_at(b, 80),
        })
    }
}

/// One entry as laid out in a blob.
struct Raw<'a> {
    off: usize,
    e: &'a [u8],
    target_offset: usize,
}

enum RawTarget {
    Standard(i32),
    Error(String),
    Ext(Xt),
}

fn ext_at(kind: XtKind, b: &[u8], what: &str, off: usize) -> Result<(Xt, usize), String> {
    if b.len() < EXT_HDR {
        return Err(format!("truncated {what} at entry offset {off}"));
    }
    let size = u16_at(b, 0) as usize;
    if size < EXT_HDR || size > b.len() {
        return Err(format!("{what} of size {size} at entry offset {off}"));
    }
    let x = Xt::new(
        kind,
        &cstr(&b[2..2 + EXT_NAME_LEN]),
        b[31] as u32,
        b[EXT_HDR..size].to_vec(),
    );
    Ok((x, size))
}

impl Raw<'_> {
    fn target(&self) -> Result<RawTarget, String> {
        let (x, _) = ext_at(XtKind::Target, &self.e[self.target_offset..], "target", self.off)?;
        Ok(match x.name.as_str() {
            "" if x.info.len() >= 4 => RawTarget::Standard(i32::from_ne_bytes(x.info[..4].try_into().unwrap())),
            ERROR_NAME => RawTarget::Error(cstr(&x.info)),
            _ => RawTarget::Ext(x),
        })
    }

    fn counters(&self, s: &Shape) -> Counters {
        Counters {
            packets: u64_at(self.e, s.counters),
            bytes: u64_at(self.e, s.counters + 8),
        }
    }
}

fn split(f: Family, blob: &[u8]) -> Result<Vec<Raw<'_>>, String> {
    let s = shape(f);
    let mut out = Vec::new();
    let mut off = 0;
    while off < blob.len() {
        let rest = &blob[off..];
        if rest.len() < s.size {
            return Err(format!("truncated entry at offset {off}"));
        }
        let t = u16_at(rest, s.target_offset) as usize;
        let n = u16_at(rest, s.next_offset) as usize;
        if t < s.size || n < t + EXT_HDR || n > rest.len() || !n.is_multiple_of(8) {
            return Err(format!(
                "entry at offset {off} has target offset {t} and next offset {n}"
            ));
        }
        out.push(Raw {
            off,
            e: &rest[..n],
            target_offset: t,
        });
        off += n;
    }
    Ok(out)
}

fn addr(f: Family, b: &[u8]) -> IpAddr {
    match f {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).unwrap())),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap())),
    }
}

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn iface(b: &[u8], name: usize, mask: usize) -> Iface {
    Iface {
        name: cstr(&b[name..name + 16]),
        mask: b[mask..mask + 16].try_into().unwrap(),
    }
}

/// Decodes the entries of a table `info` describes. The result keeps, per rule and chain, the
/// index of the entry it came from (for the counters a replace hands back).
pub fn decode(f: Family, info: &Info, blob: &[u8]) -> Result<Table, String> {
    let s = shape(f);
    let bad = |what: String| format!("table {}: {what}", info.name);
    let entries = split(f, blob).map_err(bad)?;
    if entries.len() != info.num_entries as usize {
        return Err(bad(format!(
            "{} entries, the kernel said {}",
            entries.len(),
            info.num_entries
        )));
    }
    let valid = |h: usize| info.valid_hooks & (1 << h) != 0;
    // A user chain's jumps point at the entry after its head.
    let mut starts: HashMap<usize, String> = HashMap::new();
    for (k, r) in entries.iter().enumerate() {
        if k + 1 < entries.len() {
            if let RawTarget::Error(name) = r.target()? {
                starts.insert(r.off + r.e.len(), name);
            }
        }
    }
    let mut chains: Vec<Chain> = Vec::new();
    let mut cur: Option<Chain> = None;
    let last = entries.len().saturating_sub(1);
    for (k, r) in entries.iter().enumerate() {
        let target = r.target()?;
        if cur.is_none() {
            if let Some(h) = (0..NUM_HOOKS).find(|&h| valid(h) && info.hook_entry[h] as usize == r.off) {
                cur = Some(Chain::builtin(h));
            }
        }
        let Some(c) = cur.as_mut() else {
            match target {
                RawTarget::Error(_) if k == last => break,
                RawTarget::Error(name) => {
                    let mut c = Chain::user(&name);
                    c.head = Some(k as u32);
                    cur = Some(c);
                    continue;
                }
                _ => return Err(bad(format!("entry at offset {} belongs to no chain", r.off))),
            }
        };
        if let Some(h) = c.hook {
            if info.underflow[h] as usize == r.off {
                c.policy = Some(match target {
                    RawTarget::Standard(V_ACCEPT) => Policy::Accept,
                    RawTarget::Standard(V_DROP) => Policy::Drop,
                    _ => {
                        return Err(bad(format!(
                            "{} has a policy that is neither ACCEPT nor DROP",
                            HOOKS[h]
                        )))
                    }
                });
                c.counters = r.counters(s);
                c.tail = Some(k as u32);
                chains.extend(cur.take());
                continue;
            }
        } else if k < last && matches!(entries[k + 1].target()?, RawTarget::Error(_)) {
            // The unconditional RETURN that ends a user chain.
            c.tail = Some(k as u32);
            chains.extend(cur.take());
            continue;
        }
        let b = r.e;
        let mut flags = b[s.flags];
        let goto = flags & s.goto != 0;
        flags &= !s.goto;
        let target = match target {
            RawTarget::Standard(V_ACCEPT) => Target::Accept,
            RawTarget::Standard(V_DROP) => Target::Drop,
            RawTarget::Standard(V_RETURN) => Target::Return,
            RawTarget::Standard(v) if v < 0 => Target::Standard(v),
            RawTarget::Standard(v) if v as usize == r.off + b.len() => Target::Continue,
            RawTarget::Standard(v) => match starts.get(&(v as usize)) {
                Some(name) if goto => Target::Goto(name.clone()),
                Some(name) => Target::Jump(name.clone()),
                None => {
                    return Err(bad(format!(
                        "a rule of {} jumps to offset {v}, no chain's start",
                        c.name
                    )))
                }
            },
            RawTarget::Error(name) => return Err(bad(format!("chain {name} starts inside chain {}", c.name))),
            RawTarget::Ext(x) => Target::Ext(x),
        };
        let mut matches = Vec::new();
        let mut at = s.size;
        while at < r.target_offset {
            let (m, size) = ext_at(XtKind::Match, &b[at..r.target_offset], "match", r.off)?;
            matches.push(m);
            at += size;
        }
        c.rules.push(Rule {
            family: f,
            src: Addr {
                addr: addr(f, &b[s.src..s.src + s.alen]),
                mask: addr(f, &b[s.smsk..s.smsk + s.alen]),
            },
            dst: Addr {
                addr: addr(f, &b[s.dst..s.dst + s.alen]),
                mask: addr(f, &b[s.dmsk..s.dmsk + s.alen]),
            },
            in_iface: iface(b, s.iniface, s.iniface_mask),
            out_iface: iface(b, s.outiface, s.outiface_mask),
            proto: u16_at(b, s.proto),
            flags,
            invflags: b[s.invflags],
            tos: s.tos.map(|t| b[t]).unwrap_or(0),
            nfcache: u32_at(b, s.nfcache),
            matches,
            target,
            counters: r.counters(s),
            origin: Some(k as u32),
        });
    }
    if let Some(c) = cur {
        return Err(bad(format!("chain {} does not end", c.name)));
    }
    Ok(Table {
        name: info.name.clone(),
        family: f,
        valid_hooks: info.valid_hooks,
        chains,
    })
}

/// A table ready for `IPT_SO_SET_REPLACE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub blob: Vec<u8>,
    pub num_entries: u32,
    pub hook_entry: [u32; NUM_HOOKS],
    pub underflow: [u32; NUM_HOOKS],
    /// Per entry written, the index of the entry it was read from (its counters go on).
    pub origins: Vec<Option<u32>>,
}

fn rule_size(f: Family, r: &Rule) -> usize {
    let m: usize = r.matches.iter().map(|m| EXT_HDR + align(m.info.len())).sum();
    let t = match &r.target {
        Target::Ext(x) => EXT_HDR + align(x.info.len()),
        _ => STANDARD_SIZE,
    };
    entry_len(f) + m + t
}

/// The chains in the order libiptc writes them: built-in ones by hook, then user ones by name.
fn ordered(t: &Table) -> Vec<&Chain> {
    let mut v: Vec<&Chain> = t.chains.iter().collect();
    v.sort_by(|a, b| match (a.hook, b.hook) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.name.as_bytes().cmp(b.name.as_bytes()),
    });
    v
}

struct Writer<'a> {
    f: Family,
    s: &'static Shape,
    out: Vec<u8>,
    origins: Vec<Option<u32>>,
    starts: &'a HashMap<&'a str, usize>,
}

impl Writer<'_> {
    /// Writes one entry: the rule's fixed part, its matches, then the target bytes `target`
    /// (header included) and returns the entry's offset.
    fn entry(&mut self, r: &Rule, goto: bool, target: &[u8], origin: Option<u32>) -> usize {
        let s = self.s;
        let at = self.out.len();
        let mut e = vec![0u8; s.size];
        e[s.src..s.src + s.alen].copy_from_slice(&addr_bytes(r.src.addr));
        e[s.smsk..s.smsk + s.alen].copy_from_slice(&addr_bytes(r.src.mask));
        e[s.dst..s.dst + s.alen].copy_from_slice(&addr_bytes(r.dst.addr));
        e[s.dmsk..s.dmsk + s.alen].copy_from_slice(&addr_bytes(r.dst.mask));
        put_name(&mut e[s.iniface..s.iniface + 16], &r.in_iface.name);
        put_name(&mut e[s.outiface..s.outiface + 16], &r.out_iface.name);
        e[s.iniface_mask..s.iniface_mask + 16].copy_from_slice(&r.in_iface.mask);
        e[s.outiface_mask..s.outiface_mask + 16].copy_from_slice(&r.out_iface.mask);
        e[s.proto..s.proto + 2].copy_from_slice(&r.proto.to_ne_bytes());
        if let Some(t) = s.tos {
            e[t] = r.tos;
        }
        e[s.flags] = r.flags | if goto { s.goto } else { 0 };
        e[s.invflags] = r.invflags;
        e[s.nfcache..s.nfcache + 4].copy_from_slice(&r.nfcache.to_ne_bytes());
        e[s.counters..s.counters + 8].copy_from_slice(&r.counters.packets.to_ne_bytes());
        e[s.counters + 8..s.counters + 16].copy_from_slice(&r.counters.bytes.to_ne_bytes());
        for m in &r.matches {
            e.extend(ext_bytes(m));
        }
        let target_offset = e.len();
        e.extend_from_slice(target);
        let next = e.len();
        e[s.target_offset..s.target_offset + 2].copy_from_slice(&(target_offset as u16).to_ne_bytes());
        e[s.next_offset..s.next_offset + 2].copy_from_slice(&(next as u16).to_ne_bytes());
        self.out.extend(e);
        self.origins.push(origin);
        at
    }

    fn standard(&mut self, verdict: i32, counters: Counters, origin: Option<u32>) -> usize {
        let mut r = Rule::new(self.f);
        r.counters = counters;
        self.entry(&r, false, &standard_bytes(verdict), origin)
    }

    fn error(&mut self, name: &str, origin: Option<u32>) -> usize {
        let mut t = vec![0u8; ERROR_SIZE];
        t[..2].copy_from_slice(&(ERROR_SIZE as u16).to_ne_bytes());
        put_name(&mut t[2..2 + EXT_NAME_LEN], ERROR_NAME);
        put_name(&mut t[EXT_HDR..EXT_HDR + 30], name);
        self.entry(&Rule::new(self.f), false, &t, origin)
    }

    fn rule(&mut self, r: &Rule, chain: &str) -> Result<(), String> {
        let size = rule_size(self.f, r);
        let here = self.out.len();
        let (goto, target) = match &r.target {
            Target::Accept => (false, standard_bytes(V_ACCEPT)),
            Target::Drop => (false, standard_bytes(V_DROP)),
            Target::Return => (false, standard_bytes(V_RETURN)),
            Target::Standard(v) => (false, standard_bytes(*v)),
            Target::Continue => (false, standard_bytes((here + size) as i32)),
            Target::Jump(c) | Target::Goto(c) => {
                let Some(&at) = self.starts.get(c.as_str()) else {
                    return Err(format!("a rule of {chain} jumps to {c}, which is no user chain"));
                };
                (matches!(r.target, Target::Goto(_)), standard_bytes(at as i32))
            }
            Target::Ext(x) => (false, ext_bytes(x)),
        };
        self.entry(r, goto, &target, r.origin);
        Ok(())
    }
}

fn standard_bytes(verdict: i32) -> Vec<u8> {
    let mut t = vec![0u8; STANDARD_SIZE];
    t[..2].copy_from_slice(&(STANDARD_SIZE as u16).to_ne_bytes());
    t[EXT_HDR..EXT_HDR + 4].copy_from_slice(&verdict.to_ne_bytes());
    t
}

fn ext_bytes(x: &Xt) -> Vec<u8> {
    let size = EXT_HDR + align(x.info.len());
    let mut b = vec![0u8; size];
    b[..2].copy_from_slice(&(size as u16).to_ne_bytes());
    put_name(&mut b[2..2 + EXT_NAME_LEN], &x.name);
    b[31] = x.rev as u8;
    b[EXT_HDR..EXT_HDR + x.info.len()].copy_from_slice(&x.info);
    b
}

/// Lays a table out as libiptc would (see the module doc of `xtables`).
pub fn encode(t: &Table) -> Result<Encoded, String> {
    let f = t.family;
    let e = entry_len(f);
    let chains = ordered(t);
    // Pass 1: where each user chain's first entry will be.
    let mut starts: HashMap<&str, usize> = HashMap::new();
    let mut off = 0;
    for c in &chains {
        if c.rules.iter().any(|r| r.family != f) {
            return Err(format!("chain {} holds a rule of the other family", c.name));
        }
        if !c.is_builtin() {
            off += e + ERROR_SIZE;
            starts.insert(&c.name, off);
        }
        off += c.rules.iter().map(|r| rule_size(f, r)).sum::<usize>() + e + STANDARD_SIZE;
    }
    let mut w = Writer {
        f,
        s: shape(f),
        out: Vec::with_capacity(off + e + ERROR_SIZE),
        origins: Vec::new(),
        starts: &starts,
    };
    let mut hook_entry = [0u32; NUM_HOOKS];
    let mut underflow = [0u32; NUM_HOOKS];
    for c in &chains {
        match c.hook {
            Some(h) => {
                hook_entry[h] = w.out.len() as u32;
                for r in &c.rules {
                    w.rule(r, &c.name)?;
                }
                let v = match c.policy {
                    Some(Policy::Drop) => V_DROP,
                    _ => V_ACCEPT,
                };
                underflow[h] = w.standard(v, c.counters, c.tail) as u32;
            }
            None => {
                w.error(&c.name, c.head);
                for r in &c.rules {
                    w.rule(r, &c.name)?;
                }
                w.standard(V_RETURN, Counters::default(), c.tail);
            }
        }
    }
    w.error(ERROR_NAME, None);
    Ok(Encoded {
        num_entries: w.origins.len() as u32,
        blob: w.out,
        hook_entry,
        underflow,
        origins: w.origins,
    })
}

/// The `ipt_replace` header for `enc`, replacing a table of `old_entries` entries whose
/// counters the kernel writes to `counters` (`old_entries` × 16 bytes).
pub fn replace_header(t: &Table, enc: &Encoded, old_entries: u32, counters: *mut u8) -> Vec<u8> {
    let mut h = vec![0u8; REPLACE_HDR];
    put_name(&mut h[..TABLE_NAME_LEN], &t.name);
    h[32..36].copy_from_slice(&t.valid_hooks.to_ne_bytes());
    h[36..40].copy_from_slice(&enc.num_entries.to_ne_bytes());
    h[40..44].copy_from_slice(&(enc.blob.len() as u32).to_ne_bytes());
    for i in 0..NUM_HOOKS {
        h[44 + 4 * i..48 + 4 * i].copy_from_slice(&enc.hook_entry[i].to_ne_bytes());
        h[64 + 4 * i..68 + 4 * i].copy_from_slice(&enc.underflow[i].to_ne_bytes());
    }
    h[84..88].copy_from_slice(&old_entries.to_ne_bytes());
    h[88..96].copy_from_slice(&(counters as usize as u64).to_ne_bytes());
    h
}

/// The `xt_counters_info` that hands the old table's counters (`old`, as the replace wrote
/// them) to the entries that came from it.
pub fn add_counters(t: &Table, enc: &Encoded, old: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; COUNTERS_INFO_HDR + enc.origins.len() * COUNTERS_LEN];
    put_name(&mut b[..TABLE_NAME_LEN], &t.name);
    b[32..36].copy_from_slice(&(enc.origins.len() as u32).to_ne_bytes());
    for (i, o) in enc.origins.iter().enumerate() {
        let Some(o) = o else { continue };
        let src = *o as usize * COUNTERS_LEN;
        if let Some(c) = old.get(src..src + COUNTERS_LEN) {
            let dst = COUNTERS_INFO_HDR + i * COUNTERS_LEN;
            b[dst..dst + COUNTERS_LEN].copy_from_slice(c);
        }
    }
    b
}

/// The blob of the table a fresh netns registers for `valid_hooks` (built-in chains with
/// ACCEPT policies), for tests and for a table being made.
pub fn empty_table(f: Family, name: &str, valid_hooks: u32) -> Table {
    Table {
        name: name.to_string(),
        family: f,
        valid_hooks,
        chains: (0..NUM_HOOKS)
            .filter(|h| valid_hooks & (1 << h) != 0)
            .map(Chain::builtin)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::nft::xt;

    fn info_of(t: &Table, enc: &Encoded) -> Info {
        Info {
            name: t.name.clone(),
            valid_hooks: t.valid_hooks,
            hook_entry: enc.hook_entry,
            underflow: enc.underflow,
            num_entries: enc.num_entries,
            size: enc.blob.len() as u32,
        }
    }

    fn round_trip(t: &Table) -> Table {
        let enc = encode(t).unwrap();
        let back = decode(t.family, &info_of(t, &enc), &enc.blob).unwrap();
        // A second encode is byte-identical (origins aside).
        assert_eq!(encode(&back).unwrap().blob, enc.blob);
        back
    }

    #[test]
    fn empty_filter_is_libiptcs_layout() {
        let t = empty_table(Family::V4, "filter", 0b1110);
        let enc = encode(&t).unwrap();
        // INPUT, FORWARD, OUTPUT policies (112 + 40 each), then the final ERROR (112 + 64).
        assert_eq!(enc.blob.len(), 3 * 152 + 176);
        assert_eq!(enc.hook_entry, [0, 0, 152, 304, 0]);
        assert_eq!(enc.underflow, enc.hook_entry);
        assert_eq!(enc.num_entries, 4);
        assert_eq!(round_trip(&t), t);
        let t6 = empty_table(Family::V6, "nat", 0b11011);
        assert_eq!(encode(&t6).unwrap().blob.len(), 4 * (168 + 40) + 168 + 64);
        assert_eq!(round_trip(&t6), t6);
    }

    #[test]
    fn rules_jumps_and_policies_round_trip() {
        for f in [Family::V4, Family::V6] {
            let (host, net): (IpAddr, &str) = if f.is_v6() {
                ("fd00::5".parse().unwrap(), "fd00::/64")
            } else {
                ("10.0.0.5".parse().unwrap(), "10.0.0.0/24")
            };
            let mut t = empty_table(f, "filter", 0b1110);
            t.ensure_chain("CNI-FORWARD").unwrap();
            t.ensure_chain("CNI-ADMIN").unwrap();
            t.set_policy("FORWARD", Policy::Drop).unwrap();
            t.chain_mut("FORWARD").unwrap().counters = Counters { packets: 3, bytes: 180 };
            let rules = [
                (
                    "FORWARD",
                    Rule::new(f).comment("CNI firewall plugin rules").jump("CNI-FORWARD"),
                ),
                ("CNI-FORWARD", Rule::new(f).comment("admin").jump("CNI-ADMIN")),
                (
                    "CNI-FORWARD",
                    Rule::new(f)
                        .dst(host, false)
                        .ctstate(xt::ctstate::RELATED | xt::ctstate::ESTABLISHED)
                        .jump("ACCEPT"),
                ),
                ("CNI-FORWARD", Rule::new(f).src(host, false).jump("ACCEPT")),
                (
                    "CNI-FORWARD",
                    Rule::new(f)
                        .in_iface("br0", false)
                        .out_iface("br0", true)
                        .goto("CNI-ADMIN"),
                ),
                (
                    "CNI-ADMIN",
                    Rule::new(f)
                        .src(net.parse::<ipnet::IpNet>().unwrap(), true)
                        .proto(6)
                        .dport(80),
                ),
                ("CNI-ADMIN", Rule::new(f).mark(0x2000, 0x2000).jump("DROP")),
                ("INPUT", Rule::new(f).jump("RETURN")),
            ];
            for (c, r) in rules.iter().cloned() {
                assert!(t.insert_unique(c, r, false).unwrap());
            }
            let back = round_trip(&t);
            assert_eq!(back, t, "{f}");
            // Every rule came back knowing its entry (for the counters).
            assert!(back.chains.iter().flat_map(|c| &c.rules).all(|r| r.origin.is_some()));
            assert_eq!(back.rules("CNI-FORWARD")[3].jump_target(), Some("CNI-ADMIN"));
            assert!(matches!(back.rules("CNI-FORWARD")[3].target, Target::Goto(_)));
            assert!(matches!(back.rules("CNI-ADMIN")[0].target, Target::Continue));
            assert_eq!(back.chain("FORWARD").unwrap().policy, Some(Policy::Drop));
        }
    }

    #[test]
    fn nat_targets_round_trip_and_origins_follow_entries() {
        let f = Family::V4;
        let mut t = empty_table(f, "nat", 0b11011);
        t.ensure_chain("CNI-DN-x").unwrap();
        t.insert_unique(
            "CNI-DN-x",
            Rule::new(f)
                .proto(6)
                .dport(8080)
                .target(xt::dnat_target("10.0.0.5".parse().unwrap(), Some(80))),
            false,
        )
        .unwrap();
        t.insert_unique(
            "POSTROUTING",
            Rule::new(f).mark(0x2000, 0x2000).target(xt::masquerade_target(false)),
            false,
        )
        .unwrap();
        let back = round_trip(&t);
        assert_eq!(back, t);
        // Adding a chain before the read ones moves them; origins still name the old entries.
        let mut more = back.clone();
        more.ensure_chain("CNI-A").unwrap();
        more.insert_unique("CNI-A", Rule::new(f).jump("ACCEPT"), false).unwrap();
        let enc = encode(&more).unwrap();
        let old = encode(&back).unwrap();
        assert_eq!(enc.num_entries, old.num_entries + 3);
        let kept: Vec<u32> = enc.origins.iter().flatten().copied().collect();
        assert_eq!(kept, (0..old.num_entries - 1).collect::<Vec<_>>());
        // The counters handed back go to the entries they came from.
        let mut counters = vec![0u8; old.num_entries as usize * COUNTERS_LEN];
        counters[0..8].copy_from_slice(&7u64.to_ne_bytes());
        let add = add_counters(&more, &enc, &counters);
        assert_eq!(u32_at(&add, 32), enc.num_entries);
        assert_eq!(u64_at(&add, COUNTERS_INFO_HDR), 7, "PREROUTING's policy stays first");
    }

    #[test]
    fn malformed_blobs_are_errors() {
        let t = empty_table(Family::V4, "filter", 0b1110);
        let enc = encode(&t).unwrap();
        let info = info_of(&t, &enc);
        assert!(decode(Family::V4, &info, &enc.blob[..100]).is_err());
        let mut wrong = info.clone();
        wrong.num_entries = 9;
        assert!(decode(Family::V4, &wrong, &enc.blob).is_err());
        let mut bad = enc.blob.clone();
        bad[90] = 3; // next_offset 3
        assert!(decode(Family::V4, &info, &bad).is_err());
        // A jump to no chain's start.
        let mut j = t.clone();
        j.ensure_chain("C").unwrap();
        j.insert_unique("INPUT", Rule::new(Family::V4).jump("C"), false)
            .unwrap();
        let mut enc = encode(&j).unwrap();
        enc.blob[112 + 32..112 + 36].copy_from_slice(&8i32.to_ne_bytes());
        assert!(decode(Family::V4, &info_of(&j, &enc), &enc.blob).is_err());
        let info = Info::parse(&Info::request("nat")).unwrap();
        assert_eq!((info.name.as_str(), info.size), ("nat", 0));
    }
}
