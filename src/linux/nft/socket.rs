//! [`NftSocket`]: a `NETLINK_NETFILTER` socket that commits batches and lists one table.
//!
//! The socket is a plain [`NfSocket`] (`socket`/`send`/`recv`, no background thread): an
//! nftables batch is several netlink messages that must reach the kernel in a single `send`,
//! which neli's typed `NlSocketHandle::send` (one message per call) cannot do, so we encode the
//! bytes ourselves.

use std::cell::Cell;
use std::io;
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::MsgFlags;

use crate::linux::netfilter::{self, NfSocket};
use crate::linux::{Error, NetNs};

use super::expr::Expr;
use super::msg::BatchMsg;
use super::wire::{self, AttrWriter, NlMsg};
use super::{BaseChain, Chain, ChainType, Family, Hook, Policy, Rule, Table};

/// The kernel caps a dump's skb at 32 KiB (netlink_recvmsg), acks are capped: twice that is
/// room enough, and MSG_TRUNC makes a larger reply an error rather than a silent cut. One
/// buffer per socket, allocated once: a fresh 256 KiB calloc per request used to end up on
/// the brk heap (glibc's mmap threshold rises after the first is freed) and cost 256 KiB of
/// RSS each time.
const RECV_BUF: usize = 64 * 1024;
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// What every nftables error's context starts with, so a message says which kernel API failed.
const PREFIX: &str = "nftables: ";

fn io_err(what: &str, e: io::Error) -> Error {
    Error::io(format!("{PREFIX}{what}"), e)
}

fn other_err(what: &str, why: &str) -> Error {
    Error::other(format!("{PREFIX}{what}"), why)
}

fn kernel_err(what: &str, errno: i32, ext_ack: Option<String>) -> Error {
    Error::kernel(format!("{PREFIX}{what}"), errno, ext_ack)
}

/// A netfilter netlink socket, bound to the network namespace it was created in. Its close
/// may sleep for an RCU grace period; `late_close` defers it in a short-lived process.
pub struct NftSocket {
    sock: NfSocket,
    seq: Cell<u32>,
    rbuf: std::cell::RefCell<Vec<u8>>,
}

impl NftSocket {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, Error> {
        let what = format!("{PREFIX}open NETLINK_NETFILTER socket");
        // Fuzz builds (fuzz/) drive plugins up to their first kernel call, never past it.
        if cfg!(fuzzing) {
            return Err(Error::io(
                what,
                std::io::Error::other("no kernel access in a fuzz build"),
            ));
        }
        Ok(Self::wrap(NfSocket::open(&what, RECV_TIMEOUT)?))
    }

    /// Opens a socket inside another network namespace; the socket stays bound to it.
    pub fn in_netns(ns: &NetNs) -> Result<Self, Error> {
        let what = format!("{PREFIX}open NETLINK_NETFILTER socket");
        Ok(Self::wrap(NfSocket::open_in(ns, &what, RECV_TIMEOUT)?))
    }

    /// [`in_netns`](Self::in_netns) by path, e.g. `/run/netns/NAME`.
    pub fn open_in_netns_path(path: &Path) -> Result<Self, Error> {
        Self::in_netns(&NetNs::open(path)?)
    }

    fn wrap(sock: NfSocket) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        NftSocket {
            sock,
            rbuf: std::cell::RefCell::new(Vec::new()),
            seq: Cell::new(seed),
        }
    }

    fn next_seq(&self, n: u32) -> u32 {
        let s = self.seq.get().wrapping_add(1);
        self.seq.set(s.wrapping_add(n));
        s
    }

    fn send(&self, what: &str, buf: &[u8]) -> Result<(), Error> {
        self.sock.send(buf).map_err(|e| io_err(what, e))?;
        Ok(())
    }

    fn recv<'b>(&self, what: &str, buf: &'b mut [u8]) -> Result<&'b [u8], Error> {
        let n = self.sock.recv(&mut *buf, MsgFlags::MSG_TRUNC).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                other_err(what, "timed out waiting for the kernel's reply")
            } else {
                io_err(what, e)
            }
        })?;
        if n > buf.len() {
            return Err(other_err(
                what,
                &format!("a {n}-byte reply does not fit the {}-byte buffer", buf.len()),
            ));
        }
        Ok(&buf[..n])
    }

    /// The ruleset's generation, which every committed change increments. Read it before
    /// the listings a batch is built from, and commit with
    /// [`Batch::commit_if_unchanged`](super::Batch::commit_if_unchanged): a concurrent change
    /// in between then fails the batch instead of being raced.
    pub fn generation(&self) -> Result<u32, Error> {
        let what = "get ruleset generation";
        let msgs = self.request(what, wire::NFT_MSG_GETGEN, Family::Inet, false, &[])?;
        msgs.iter()
            .find_map(|a| wire::attr_u32(a, wire::NFTA_GEN_ID))
            .ok_or_else(|| other_err(what, "no generation in the kernel's reply"))
    }

    pub(crate) fn commit(&self, msgs: &[BatchMsg], generation: Option<u32>) -> Result<(), Error> {
        self.commit_echo(msgs, generation, false).map(|_| ())
    }

    /// [`commit`](Self::commit); with `echo`, every NEWRULE asks for NLM_F_ECHO and the
    /// kernel's copy of the rule it made (sent at commit, before the acks) gives its handle:
    /// one entry per message, `Some(handle)` for the NEWRULEs.
    pub(crate) fn commit_echo(
        &self,
        msgs: &[BatchMsg],
        generation: Option<u32>,
        echo: bool,
    ) -> Result<Vec<Option<u64>>, Error> {
        let mut handles = vec![None; msgs.len()];
        if msgs.is_empty() {
            return Ok(handles);
        }
        let n = msgs.len() as u32;
        let begin = self.next_seq(n + 2);
        let res_id = wire::NFNL_SUBSYS_NFTABLES;
        let mut battrs = AttrWriter::new();
        if let Some(g) = generation {
            battrs.put_u32(wire::NFNL_BATCH_GENID, g);
        }
        let mut buf = wire::nlmsg(
            wire::NFNL_MSG_BATCH_BEGIN,
            wire::NLM_F_REQUEST,
            begin,
            0,
            res_id,
            &battrs.buf,
        );
        for (i, m) in msgs.iter().enumerate() {
            let mut flags = wire::NLM_F_REQUEST | wire::NLM_F_ACK | m.flags;
            if echo && m.msg_type == wire::NFT_MSG_NEWRULE {
                flags |= wire::NLM_F_ECHO;
            }
            let seq = begin + 1 + i as u32;
            buf.extend(wire::nlmsg(
                wire::nft_type(m.msg_type),
                flags,
                seq,
                m.family.nfproto(),
                0,
                &m.attrs,
            ));
        }
        buf.extend(wire::nlmsg(
            wire::NFNL_MSG_BATCH_END,
            wire::NLM_F_REQUEST,
            begin + n + 1,
            0,
            res_id,
            &[],
        ));
        let what = "commit batch";
        self.send(what, &buf)?;

        // Every message asked for an ack, so each gets exactly one reply (0 or -errno); the
        // kernel keeps validating after a failure to report every error, and then aborts the
        // whole batch. An error on the BEGIN/END seq is about the batch itself.
        let mut acked = vec![false; msgs.len()];
        let mut remaining = msgs.len();
        let mut first_err: Option<(usize, Error)> = None;
        let mut rbuf = self.rbuf.borrow_mut();
        rbuf.resize(RECV_BUF, 0);
        while remaining > 0 {
            let data = self.recv(what, &mut rbuf)?;
            for m in wire::nlmsgs(data) {
                if echo && m.ty == wire::nft_type(wire::NFT_MSG_NEWRULE) && m.seq > begin && m.seq <= begin + n {
                    let body = m.body.get(wire::NFGENMSG_LEN..).unwrap_or(&[]);
                    handles[(m.seq - begin - 1) as usize] = wire::attr_u64(body, wire::NFTA_RULE_HANDLE);
                    continue;
                }
                if m.ty != wire::NLMSG_ERROR || m.seq < begin || m.seq > begin + n + 1 {
                    continue; // stale reply of an earlier request
                }
                let Some((errno, kmsg, offs)) = parse_ack(&m) else {
                    continue;
                };
                if m.seq == begin || m.seq == begin + n + 1 {
                    if errno != 0 {
                        return Err(kernel_err(what, errno, kmsg));
                    }
                    continue;
                }
                let i = (m.seq - begin - 1) as usize;
                if !acked[i] {
                    acked[i] = true;
                    remaining -= 1;
                }
                if errno != 0 && first_err.as_ref().is_none_or(|(j, _)| i < *j) {
                    let msg = &msgs[i];
                    first_err = Some((
                        i,
                        kernel_err(&format!("{} (batch message {} of {})", msg.what, i + 1, n), errno, kmsg)
                            .at(offs.and_then(|o| describe_offset(msg, o))),
                    ));
                }
            }
        }
        match first_err {
            Some((_, e)) => Err(e),
            None => Ok(handles),
        }
    }

    /// Sends a GET request and collects the replies (a dump, or a single object).
    /// Retries a dump that the kernel marks as interrupted by a concurrent change.
    pub(crate) fn request(
        &self,
        what: &str,
        msg: u16,
        family: Family,
        dump: bool,
        attrs: &[u8],
    ) -> Result<Vec<Vec<u8>>, Error> {
        'retry: for _ in 0..5 {
            let seq = self.next_seq(1);
            let flags = wire::NLM_F_REQUEST | if dump { wire::NLM_F_DUMP } else { wire::NLM_F_ACK };
            self.send(
                what,
                &wire::nlmsg(wire::nft_type(msg), flags, seq, family.nfproto(), 0, attrs),
            )?;
            let mut out = Vec::new();
            let mut rbuf = self.rbuf.borrow_mut();
            rbuf.resize(RECV_BUF, 0);
            let mut interrupted = false;
            loop {
                let data = self.recv(what, &mut rbuf)?;
                for m in wire::nlmsgs(data) {
                    if m.seq != seq {
                        continue;
                    }
                    interrupted |= m.flags & wire::NLM_F_DUMP_INTR != 0;
                    match m.ty {
                        // An interrupted dump is read to its end, then retried.
                        wire::NLMSG_DONE if interrupted => continue 'retry,
                        wire::NLMSG_DONE => return Ok(out),
                        wire::NLMSG_ERROR => {
                            let (errno, kernel_msg, _) = parse_ack(&m).unwrap_or((nix::libc::EIO, None, None));
                            if errno == 0 {
                                return Ok(out);
                            }
                            return Err(kernel_err(what, errno, kernel_msg));
                        }
                        _ => out.push(m.body.get(wire::NFGENMSG_LEN..).unwrap_or(&[]).to_vec()),
                    }
                }
            }
        }
        Err(other_err(what, "dump kept being interrupted by concurrent changes"))
    }

    /// The rule with `handle` in `chain`, with its expressions: one GETRULE for one rule (not
    /// a dump). `None` when the rule, its chain or its table is not there.
    pub fn get_rule(&self, family: Family, table: &str, chain: &str, handle: u64) -> Result<Option<Rule>, Error> {
        let mut w = AttrWriter::new();
        w.put_str(wire::NFTA_RULE_TABLE, table)
            .put_str(wire::NFTA_RULE_CHAIN, chain)
            .put_u64(wire::NFTA_RULE_HANDLE, handle);
        let what = format!("get rule {family} {table} {chain} handle {handle}");
        let t = Table::new(family, table);
        match self.request(&what, wire::NFT_MSG_GETRULE, family, false, &w.buf) {
            Ok(msgs) => Ok(msgs.first().map(|a| decode_rule(&t, a, true))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The socket's network namespace cookie (SO_NETNS_COOKIE, Linux 5.14): unique to the
    /// namespace for as long as the system runs, never reused (an inode number is). `None`
    /// where the kernel has no such option.
    pub fn netns_cookie(&self) -> Option<u64> {
        use std::os::fd::{AsFd, AsRawFd};
        const SO_NETNS_COOKIE: nix::libc::c_int = 71;
        let mut v: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as nix::libc::socklen_t;
        // SAFETY: v and len outlive the call; the kernel writes at most len bytes.
        let rc = unsafe {
            nix::libc::getsockopt(
                self.sock.as_fd().as_raw_fd(),
                nix::libc::SOL_SOCKET,
                SO_NETNS_COOKIE,
                (&mut v as *mut u64).cast(),
                &mut len,
            )
        };
        (rc == 0 && len as usize == std::mem::size_of::<u64>()).then_some(v)
    }

    /// Whether the table exists.
    pub fn table_exists(&self, family: Family, table: &str) -> Result<bool, Error> {
        let mut w = AttrWriter::new();
        w.put_str(wire::NFTA_TABLE_NAME, table);
        let what = format!("get table {family} {table}");
        match self.request(&what, wire::NFT_MSG_GETTABLE, family, false, &w.buf) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The names of the tables of one family (one dump).
    pub fn list_tables(&self, family: Family) -> Result<Vec<String>, Error> {
        let what = format!("list tables of family {family}");
        let msgs = self.request(&what, wire::NFT_MSG_GETTABLE, family, true, &[])?;
        Ok(msgs
            .iter()
            .filter_map(|a| wire::attr_str(a, wire::NFTA_TABLE_NAME))
            .collect())
    }

    /// Whether the chain exists (false also when the table does not).
    pub fn chain_exists(&self, family: Family, table: &str, chain: &str) -> Result<bool, Error> {
        let mut w = AttrWriter::new();
        w.put_str(wire::NFTA_CHAIN_TABLE, table)
            .put_str(wire::NFTA_CHAIN_NAME, chain);
        let what = format!("get chain {family} {table} {chain}");
        match self.request(&what, wire::NFT_MSG_GETCHAIN, family, false, &w.buf) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The chain's use count (`NFTA_CHAIN_USE`): the rules in it plus the jumps and gotos
    /// into it. `None` when the chain (or its table) is not there. One GETCHAIN, so a caller
    /// that knows some of these can tell whether it knows all of them without a dump.
    pub fn chain_use(&self, family: Family, table: &str, chain: &str) -> Result<Option<u32>, Error> {
        let mut w = AttrWriter::new();
        w.put_str(wire::NFTA_CHAIN_TABLE, table)
            .put_str(wire::NFTA_CHAIN_NAME, chain);
        let what = format!("get chain {family} {table} {chain}");
        match self.request(&what, wire::NFT_MSG_GETCHAIN, family, false, &w.buf) {
            Ok(msgs) => Ok(Some(
                msgs.first()
                    .and_then(|a| wire::attr_u32(a, wire::NFTA_CHAIN_USE))
                    .ok_or_else(|| other_err(&what, "no use count in the kernel's reply"))?,
            )),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The chain with its base-chain attributes and comment (one GETCHAIN); `None` when it
    /// (or its table) is not there.
    pub fn get_chain(&self, family: Family, table: &str, chain: &str) -> Result<Option<Chain>, Error> {
        let mut w = AttrWriter::new();
        w.put_str(wire::NFTA_CHAIN_TABLE, table)
            .put_str(wire::NFTA_CHAIN_NAME, chain);
        let what = format!("get chain {family} {table} {chain}");
        let t = Table::new(family, table);
        match self.request(&what, wire::NFT_MSG_GETCHAIN, family, false, &w.buf) {
            Ok(msgs) => Ok(msgs.first().and_then(|a| decode_chain(&t, a))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The chains of one table. (The kernel cannot filter a chain dump by table, so the
    /// family's chains are dumped and other tables' chains skipped without decoding.)
    pub fn list_chains(&self, family: Family, table: &str) -> Result<Vec<Chain>, Error> {
        let what = format!("list chains of table {family} {table}");
        let t = Table::new(family, table);
        let msgs = self.request(&what, wire::NFT_MSG_GETCHAIN, family, true, &[])?;
        Ok(msgs
            .iter()
            .filter(|a| wire::attr_str(a, wire::NFTA_CHAIN_TABLE).as_deref() == Some(table))
            .filter_map(|a| decode_chain(&t, a))
            .collect())
    }

    /// The rules of one chain, in order, with their handles and comments. The dump is
    /// filtered by the kernel to this table and chain; a missing table or chain lists as empty.
    pub fn list_rules(&self, family: Family, table: &str, chain: &str) -> Result<Vec<Rule>, Error> {
        self.dump_rules(family, table, chain, true)
    }

    /// Like [`list_rules`](Self::list_rules) but without the expressions (left empty): just
    /// chain, handle and comment, which is all that finding rules by comment needs. Decoding
    /// every expression of every rule is the larger part of the cost on a busy node.
    pub fn list_rule_comments(&self, family: Family, table: &str, chain: &str) -> Result<Vec<Rule>, Error> {
        self.dump_rules(family, table, chain, false)
    }

    /// Every rule of one table (all its chains), with expressions. ENOENT if the table is missing.
    pub fn list_table_rules(&self, family: Family, table: &str) -> Result<Vec<Rule>, Error> {
        let what = format!("list rules of table {family} {table}");
        let mut w = AttrWriter::new();
        w.put_str(wire::NFTA_RULE_TABLE, table);
        let t = Table::new(family, table);
        let msgs = self.request(&what, wire::NFT_MSG_GETRULE, family, true, &w.buf)?;
        Ok(msgs.iter().map(|a| decode_rule(&t, a, true)).collect())
    }

    fn dump_rules(&self, family: Family, table: &str, chain: &str, exprs: bool) -> Result<Vec<Rule>, Error> {
        let what = format!("list rules of chain {family} {table} {chain}");
        let mut w = AttrWriter::new();
        w.put_str(wire::NFTA_RULE_TABLE, table)
            .put_str(wire::NFTA_RULE_CHAIN, chain);
        let t = Table::new(family, table);
        let msgs = self.request(&what, wire::NFT_MSG_GETRULE, family, true, &w.buf)?;
        Ok(msgs.iter().map(|a| decode_rule(&t, a, exprs)).collect())
    }

    /// Whether `chain` holds exactly `expected` (expressions and comments, in order).
    /// Rebuilding a chain that is already right would free its old rules, and every socket
    /// close then waits for the kernel to retire them (a full RCU grace period): callers
    /// check first and rebuild only what differs.
    pub fn chain_holds(&self, family: Family, table: &str, chain: &str, expected: &[Rule]) -> Result<bool, Error> {
        let have = self.list_rules(family, table, chain)?;
        Ok(have.len() == expected.len()
            && have
                .iter()
                .zip(expected)
                .all(|(h, e)| h.exprs == e.exprs && h.comment == e.comment))
    }
}

/// [`netfilter::parse_ack`] of one reply.
pub(crate) fn parse_ack(m: &NlMsg) -> Option<(i32, Option<String>, Option<usize>)> {
    netfilter::parse_ack(m.flags, m.body)
}

/// Names the attribute the kernel's ext-ack offset points into (offset counted from the start
/// of our netlink header), e.g. `expression #3 (immediate)`.
fn describe_offset(msg: &BatchMsg, off: usize) -> Option<String> {
    let off = off.checked_sub(wire::NLMSG_HDRLEN + wire::NFGENMSG_LEN)?;
    for (ty, p, start) in wire::attrs(&msg.attrs) {
        if off < start || off >= start + 4 + p.len() {
            continue;
        }
        if msg.msg_type == wire::NFT_MSG_NEWRULE && ty == wire::NFTA_RULE_EXPRESSIONS {
            let inner = off.saturating_sub(start + 4);
            for (i, (_, e, estart)) in wire::attrs(p).enumerate() {
                if inner >= estart && inner < estart + 4 + e.len() {
                    let name = wire::attr_str(e, wire::NFTA_EXPR_NAME).unwrap_or_default();
                    return Some(format!("expression #{} ({name})", i + 1));
                }
            }
        }
        return Some(format!("attribute {ty}"));
    }
    None
}

pub(crate) fn decode_chain(t: &Table, a: &[u8]) -> Option<Chain> {
    let name = wire::attr_str(a, wire::NFTA_CHAIN_NAME)?;
    let base = wire::attr(a, wire::NFTA_CHAIN_HOOK).and_then(|h| {
        Some(BaseChain {
            hook: Hook::from_number(wire::attr_u32(h, wire::NFTA_HOOK_HOOKNUM)?, t.family)?,
            priority: wire::attr_u32(h, wire::NFTA_HOOK_PRIORITY)? as i32,
            device: wire::attr_str(h, wire::NFTA_HOOK_DEV),
            chain_type: match wire::attr_str(a, wire::NFTA_CHAIN_TYPE)?.as_str() {
                "nat" => ChainType::Nat,
                "route" => ChainType::Route,
                _ => ChainType::Filter,
            },
            policy: match wire::attr_u32(a, wire::NFTA_CHAIN_POLICY) {
                Some(0) => Policy::Drop,
                _ => Policy::Accept,
            },
        })
    });
    Some(Chain {
        table: t.clone(),
        name,
        base,
        handle: wire::attr_u64(a, wire::NFTA_CHAIN_HANDLE),
        comment: wire::attr(a, wire::NFTA_CHAIN_USERDATA).and_then(wire::udata_find_comment),
    })
}

pub(crate) fn decode_rule(t: &Table, a: &[u8], exprs: bool) -> Rule {
    Rule {
        table: t.clone(),
        chain: wire::attr_str(a, wire::NFTA_RULE_CHAIN).unwrap_or_default(),
        exprs: wire::attr(a, wire::NFTA_RULE_EXPRESSIONS)
            .filter(|_| exprs)
            .map(|l| wire::attrs(l).map(|(_, e, _)| Expr::decode(e)).collect())
            .unwrap_or_default(),
        comment: wire::attr(a, wire::NFTA_RULE_USERDATA).and_then(wire::udata_find_comment),
        handle: wire::attr_u64(a, wire::NFTA_RULE_HANDLE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(code: i32) -> Vec<u8> {
        let mut b = code.to_ne_bytes().to_vec();
        b.extend_from_slice(&[0u8; 16]); // the request's header
        b
    }

    #[test]
    fn ack_codes() {
        let m = |body: &[u8]| {
            parse_ack(&NlMsg {
                ty: wire::NLMSG_ERROR,
                flags: 0,
                seq: 1,
                body,
            })
            .map(|a| a.0)
        };
        assert_eq!(m(&ack(0)), Some(0));
        assert_eq!(m(&ack(-17)), Some(17));
        assert_eq!(m(&[1, 2]), None);
        // fuzz/artifacts/nft: an error code of i32::MIN overflowed the negation (a panic
        // with overflow checks, a negative errno without).
        assert_eq!(m(&ack(i32::MIN)), None);
    }
}
