//! [`Batch`]: a list of changes the kernel applies atomically (all or nothing) between
//! `NFNL_MSG_BATCH_BEGIN` and `NFNL_MSG_BATCH_END`.

use super::msg::BatchMsg;
use super::socket::NftSocket;
use super::wire::{self, AttrWriter};
use super::{Chain, Family, Rule, Set, SetElem, Table};
use crate::linux::Error;

/// Where [`Batch::add_rule`] puts a rule in its chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// At the end (`nft add rule`).
    Append,
    /// At the start (`nft insert rule`).
    Prepend,
    /// Right after the rule with this handle.
    After(u64),
    /// Right before the rule with this handle.
    Before(u64),
}

/// An atomic nftables transaction.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub(crate) msgs: Vec<BatchMsg>,
    next_set_id: u32,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    fn push(&mut self, msg: u16, family: Family, flags: u16, w: AttrWriter, what: String) {
        self.msgs.push(BatchMsg {
            msg_type: msg,
            family,
            flags,
            attrs: w.buf,
            what,
        });
    }

    /// Creates the table if it does not exist (no error if it does, like `nft add table`).
    pub fn add_table(&mut self, t: &Table) -> &mut Self {
        let mut w = AttrWriter::new();
        w.put_str(wire::NFTA_TABLE_NAME, &t.name)
            .put_u32(wire::NFTA_TABLE_FLAGS, 0);
        if let Some(c) = &t.comment {
            w.put(wire::NFTA_TABLE_USERDATA, &wire::udata_comment(c));
        }
        self.push(
            wire::NFT_MSG_NEWTABLE,
            t.family,
            wire::NLM_F_CREATE,
            w,
            format!("add {t}"),
        );
        self
    }

    /// Deletes the table with everything in it (ENOENT if it does not exist).
    pub fn del_table(&mut self, t: &Table) -> &mut Self {
        let mut w = AttrWriter::new();
        w.put_str(wire::NFTA_TABLE_NAME, &t.name);
        self.push(wire::NFT_MSG_DELTABLE, t.family, 0, w, format!("delete {t}"));
        self
    }

    /// Creates the chain if it does not exist (like `nft add chain`).
    pub fn add_chain(&mut self, c: &Chain) -> &mut Self {
        let fam = c.table.family;
        let mut w = AttrWriter::new();
        w.put_str(wire::NFTA_CHAIN_TABLE, &c.table.name)
            .put_str(wire::NFTA_CHAIN_NAME, &c.name);
        if let Some(b) = &c.base {
            w.nest(wire::NFTA_CHAIN_HOOK, |w| {
                w.put_u32(wire::NFTA_HOOK_HOOKNUM, b.hook.number(fam))
                    .put_u32(wire::NFTA_HOOK_PRIORITY, b.priority as u32);
                if let Some(dev) = &b.device {
                    w.put_str(wire::NFTA_HOOK_DEV, dev);
                }
            });
            let policy = match b.policy {
                super::Policy::Drop => 0, // NF_DROP
                super::Policy::Accept => 1,
            };
            w.put_u32(wire::NFTA_CHAIN_POLICY, policy)
                .put_str(wire::NFTA_CHAIN_TYPE, b.chain_type.as_str());
        }
        if let Some(c) = &c.comment {
            w.put(wire::NFTA_CHAIN_USERDATA, &wire::udata_comment(c));
        }
        let what = format!("add chain {fam} {} {}", c.table.name, c.name);
        self.push(wire::NFT_MSG_NEWCHAIN, fam, wire::NLM_F_CREATE, w, what);
        self
    }

    /// Deletes an (empty, unreferenced) chain.
    pub fn del_chain(&mut self, t: &Table, chain: &str) -> &mut Self {
        let mut w = AttrWriter::new();
        w.put_str(wire::NFTA_CHAIN_TABLE, &t.name)
            .put_str(wire::NFTA_CHAIN_NAME, chain);
        let what = format!("delete chain {} {} {chain}", t.family, t.name);
        self.push(wire::NFT_MSG_DELCHAIN, t.family, 0, w, what);
        self
    }

    /// Removes every rule of a chain (a DELRULE without a handle).
    pub fn flush_chain(&mut self, t: &Table, chain: &str) -> &mut Self {
        let mut w = AttrWriter::new();
        w.put_str(wire::NFTA_RULE_TABLE, &t.name)
            .put_str(wire::NFTA_RULE_CHAIN, chain);
        let what = format!("flush chain {} {} {chain}", t.family, t.name);
        self.push(wire::NFT_MSG_DELRULE, t.family, 0, w, what);
        self
    }

    /// Adds a rule (its `handle` field is ignored; use `pos` to place it).
    pub fn add_rule(&mut self, r: &Rule, pos: Position) -> &mut Self {
        self.add_rule_attrs(r, pos, &[])
    }

    /// [`add_rule`](Self::add_rule) with the rule's xtables compat protocol
    /// (`NFTA_RULE_COMPAT`, what `iptables -p PROTO` sets), which protocol-bound compat
    /// matches such as `multiport` are checked against. The kernel does not list it back.
    pub fn add_rule_compat(&mut self, r: &Rule, pos: Position, proto: u8, inverted: bool) -> &mut Self {
        let flags = if inverted { super::xt::RULE_COMPAT_F_INV } else { 0 };
        self.add_rule_attrs(r, pos, &super::xt::rule_compat(proto, flags))
    }

    fn add_rule_attrs(&mut self, r: &Rule, pos: Position, extra: &[u8]) -> &mut Self {
        let fam = r.table.family;
        let mut w = AttrWriter::new();
        w.put_str(wire::NFTA_RULE_TABLE, &r.table.name)
            .put_str(wire::NFTA_RULE_CHAIN, &r.chain);
        // NLM_F_APPEND selects "after POSITION" (or the end); without it the kernel inserts
        // before POSITION (or at the start).
        let mut flags = wire::NLM_F_CREATE;
        let handle = match pos {
            Position::Append => {
                flags |= wire::NLM_F_APPEND;
                None
            }
            Position::Prepend => None,
            Position::After(h) => {
                flags |= wire::NLM_F_APPEND;
                Some(h)
            }
            Position::Before(h) => Some(h),
        };
        if let Some(h) = handle {
            w.put_u64(wire::NFTA_RULE_POSITION, h);
        }
        w.nest(wire::NFTA_RULE_EXPRESSIONS, |w| {
            for e in &r.exprs {
                e.encode(w);
            }
        });
        if let Some(c) = &r.comment {
            w.put(wire::NFTA_RULE_USERDATA, &wire::udata_comment(c));
        }
        w.buf.extend_from_slice(extra);
        let mut what = format!("add rule {fam} {} {}", r.table.name, r.chain);
        if let Some(c) = &r.comment {
            what += &format!(" (comment {c:?})");
        }
        self.push(wire::NFT_MSG_NEWRULE, fam, flags, w, what);
        self
    }

    /// Deletes the rule with `handle` from `chain`.
    pub fn del_rule(&mut self, t: &Table, chain: &str, handle: u64) -> &mut Self {
        let mut w = AttrWriter::new();
        w.put_str(wire::NFTA_RULE_TABLE, &t.name)
            .put_str(wire::NFTA_RULE_CHAIN, chain)
            .put_u64(wire::NFTA_RULE_HANDLE, handle);
        let what = format!("delete rule {} {} {chain} handle {handle}", t.family, t.name);
        self.push(wire::NFT_MSG_DELRULE, t.family, 0, w, what);
        self
    }

    /// Creates a named set (no error if an identical one exists).
    pub fn add_set(&mut self, s: &Set) -> &mut Self {
        let (key_type, key_len) = s.key.id_len();
        self.next_set_id += 1;
        let mut w = AttrWriter::new();
        w.put_str(wire::NFTA_SET_TABLE, &s.table.name)
            .put_str(wire::NFTA_SET_NAME, &s.name)
            .put_u32(wire::NFTA_SET_FLAGS, s.flags)
            .put_u32(wire::NFTA_SET_KEY_TYPE, key_type)
            .put_u32(wire::NFTA_SET_KEY_LEN, key_len)
            .put_u32(wire::NFTA_SET_ID, self.next_set_id);
        let what = format!("add set {} {} {}", s.table.family, s.table.name, s.name);
        self.push(wire::NFT_MSG_NEWSET, s.table.family, wire::NLM_F_CREATE, w, what);
        self
    }

    /// Adds elements to a set. In an interval set a range `a..=b` is stored, as nft does, as
    /// two elements: `a`, and `b + 1` flagged `INTERVAL_END` (omitted when `b` is the maximum).
    /// In other sets a range stores only its start.
    pub fn add_set_elements(&mut self, s: &Set, elems: &[SetElem]) -> &mut Self {
        let interval = s.flags & super::set_flags::INTERVAL != 0;
        let mut w = AttrWriter::new();
        w.put_str(wire::NFTA_SET_ELEM_LIST_TABLE, &s.table.name)
            .put_str(wire::NFTA_SET_ELEM_LIST_SET, &s.name);
        let elem = |w: &mut AttrWriter, key: &[u8], end: bool| {
            w.nest(wire::NFTA_LIST_ELEM, |w| {
                w.nest(wire::NFTA_SET_ELEM_KEY, |w| {
                    w.put(wire::NFTA_DATA_VALUE, key);
                });
                if end {
                    w.put_u32(wire::NFTA_SET_ELEM_FLAGS, wire::NFT_SET_ELEM_INTERVAL_END);
                }
            });
        };
        w.nest(wire::NFTA_SET_ELEM_LIST_ELEMENTS, |w| {
            for e in elems {
                let (start, last) = match e {
                    SetElem::Key(k) => (k, k),
                    SetElem::Range(a, b) => (a, b),
                };
                elem(w, start, false);
                if interval {
                    if let Some(next) = increment(last) {
                        elem(w, &next, true);
                    }
                }
            }
        });
        let what = format!("add elements to set {} {} {}", s.table.family, s.table.name, s.name);
        self.push(wire::NFT_MSG_NEWSETELEM, s.table.family, wire::NLM_F_CREATE, w, what);
        self
    }

    /// Sends the batch and waits for the kernel's verdict on every message. On error nothing
    /// of the batch has been applied; the error names the message that failed.
    pub fn commit(&self, sock: &NftSocket) -> Result<(), Error> {
        sock.commit(&self.msgs, None)
    }

    /// [`commit`](Self::commit), returning the handle the kernel gave each rule this batch
    /// added (NLM_F_ECHO): `Some(handle)` at the index of every [`add_rule`](Self::add_rule),
    /// `None` for the other messages. So a caller can find its rules again without a dump.
    pub fn commit_echo(&self, sock: &NftSocket) -> Result<Vec<Option<u64>>, Error> {
        sock.commit_echo(&self.msgs, None, true)
    }

    /// [`commit`](Self::commit), but only if the ruleset is still at `generation` (from
    /// [`NftSocket::generation`]); otherwise nothing is applied and the error says
    /// [`is_generation_changed`](Error::is_generation_changed): list again, rebuild, retry.
    /// This makes "add unless present" safe against concurrent writers (as iptables-nft does).
    pub fn commit_if_unchanged(&self, sock: &NftSocket, generation: u32) -> Result<(), Error> {
        sock.commit(&self.msgs, Some(generation))
    }

    /// A retry count for [`build_and_commit`](Self::build_and_commit) fit for a busy node
    /// (each retry is one concurrent writer, e.g. another pod's ADD).
    pub const BUSY_RETRIES: u32 = 100;

    /// Reads the generation, lets `build` list what it needs and fill a fresh batch, and
    /// commits it at that generation; when another writer changed the ruleset in between,
    /// starts over (at most `retries` more times). For "add unless present" batches.
    pub fn build_and_commit<E: From<Error>>(
        sock: &NftSocket,
        retries: u32,
        build: impl FnMut(&mut Batch) -> Result<(), E>,
    ) -> Result<(), E> {
        Self::build_and_commit_with(sock, retries, false, build).map(|_| ())
    }

    /// [`build_and_commit`](Self::build_and_commit) with the handles of the rules the
    /// committed batch added, as [`commit_echo`](Self::commit_echo) gives them.
    pub fn build_and_commit_echo<E: From<Error>>(
        sock: &NftSocket,
        retries: u32,
        build: impl FnMut(&mut Batch) -> Result<(), E>,
    ) -> Result<Vec<Option<u64>>, E> {
        Self::build_and_commit_with(sock, retries, true, build)
    }

    fn build_and_commit_with<E: From<Error>>(
        sock: &NftSocket,
        retries: u32,
        echo: bool,
        mut build: impl FnMut(&mut Batch) -> Result<(), E>,
    ) -> Result<Vec<Option<u64>>, E> {
        let mut attempt = 0;
        loop {
            let generation = sock.generation()?;
            let mut b = Batch::new();
            build(&mut b)?;
            match sock.commit_echo(&b.msgs, Some(generation), echo) {
                Err(e) if e.is_generation_changed() && attempt < retries => attempt += 1,
                r => return Ok(r?),
            }
        }
    }
}

/// `key + 1` as a big-endian number; `None` on overflow.
fn increment(key: &[u8]) -> Option<Vec<u8>> {
    let mut v = key.to_vec();
    for b in v.iter_mut().rev() {
        let (n, carry) = b.overflowing_add(1);
        *b = n;
        if !carry {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increment_carries() {
        assert_eq!(increment(&[10, 2, 255, 255]), Some(vec![10, 3, 0, 0]));
        assert_eq!(increment(&[255, 255]), None);
    }

    #[test]
    fn append_sets_flag_and_position() {
        let t = Table::new(Family::Ip, "t");
        let r = super::super::RuleBuilder::new(&t, "c").accept().build();
        let mut b = Batch::new();
        b.add_rule(&r, Position::After(7)).add_rule(&r, Position::Before(7));
        assert_eq!(b.msgs[0].flags, wire::NLM_F_CREATE | wire::NLM_F_APPEND);
        assert_eq!(b.msgs[1].flags, wire::NLM_F_CREATE);
        assert_eq!(wire::attr_u64(&b.msgs[0].attrs, wire::NFTA_RULE_POSITION), Some(7));
    }
}
