//! Wire format: netlink/nfnetlink constants from `<linux/netfilter/nf_tables.h>` and a tiny
//! attribute writer/reader.
//!
//! nftables attributes carry integers in network byte order (the kernel reads them with
//! `ntohl`/`be64_to_cpu`), except register *contents* (cmp/immediate data), which are raw bytes
//! in whatever order the loaded field has (packet fields big-endian, meta/ct values host order).

/// `NETLINK_NETFILTER` subsystem id of nf_tables (res_id of the batch begin/end messages).
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10; // NLMSG_MIN_TYPE
pub const NFNL_MSG_BATCH_END: u16 = 0x11;

// nf_tables_msg_types
pub const NFT_MSG_NEWTABLE: u16 = 0;
pub const NFT_MSG_GETTABLE: u16 = 1;
pub const NFT_MSG_DELTABLE: u16 = 2;
pub const NFT_MSG_NEWCHAIN: u16 = 3;
pub const NFT_MSG_GETCHAIN: u16 = 4;
pub const NFT_MSG_DELCHAIN: u16 = 5;
pub const NFT_MSG_NEWRULE: u16 = 6;
pub const NFT_MSG_GETRULE: u16 = 7;
pub const NFT_MSG_DELRULE: u16 = 8;
pub const NFT_MSG_NEWSET: u16 = 9;
pub const NFT_MSG_NEWSETELEM: u16 = 12;
pub const NFT_MSG_GETGEN: u16 = 16;
/// `NFTA_GEN_ID` of a NEWGEN reply: the ruleset's generation.
pub const NFTA_GEN_ID: u16 = 1;
/// `NFNL_BATCH_GENID` of a batch begin message: commit only at this generation.
pub const NFNL_BATCH_GENID: u16 = 1;

// The netlink framing, defined once for every family.
pub use crate::linux::netlink::wire::{
    NLA_F_NESTED, NLA_TYPE_MASK, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE,
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_ECHO, NLM_F_REQUEST,
};

pub const NFGENMSG_LEN: usize = 4;

// table
pub const NFTA_TABLE_NAME: u16 = 1;
pub const NFTA_TABLE_FLAGS: u16 = 2;
pub const NFTA_TABLE_USERDATA: u16 = 6;
// chain
pub const NFTA_CHAIN_TABLE: u16 = 1;
pub const NFTA_CHAIN_HANDLE: u16 = 2;
pub const NFTA_CHAIN_NAME: u16 = 3;
pub const NFTA_CHAIN_HOOK: u16 = 4;
pub const NFTA_CHAIN_POLICY: u16 = 5;
pub const NFTA_CHAIN_USE: u16 = 6;
pub const NFTA_CHAIN_TYPE: u16 = 7;
pub const NFTA_CHAIN_USERDATA: u16 = 12;
pub const NFTA_HOOK_HOOKNUM: u16 = 1;
pub const NFTA_HOOK_PRIORITY: u16 = 2;
pub const NFTA_HOOK_DEV: u16 = 3;
// rule
pub const NFTA_RULE_TABLE: u16 = 1;
pub const NFTA_RULE_CHAIN: u16 = 2;
pub const NFTA_RULE_HANDLE: u16 = 3;
pub const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub const NFTA_RULE_POSITION: u16 = 6;
pub const NFTA_RULE_USERDATA: u16 = 7;
pub const NFTA_LIST_ELEM: u16 = 1;
pub const NFTA_EXPR_NAME: u16 = 1;
pub const NFTA_EXPR_DATA: u16 = 2;
/// libnftnl's userdata TLV type for a rule/table/chain comment (`NFTNL_UDATA_*_COMMENT`).
pub const UDATA_COMMENT: u8 = 0;
// set
pub const NFTA_SET_TABLE: u16 = 1;
pub const NFTA_SET_NAME: u16 = 2;
pub const NFTA_SET_FLAGS: u16 = 3;
pub const NFTA_SET_KEY_TYPE: u16 = 4;
pub const NFTA_SET_KEY_LEN: u16 = 5;
pub const NFTA_SET_ID: u16 = 10;
pub const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub const NFTA_SET_ELEM_KEY: u16 = 1;
pub const NFTA_SET_ELEM_FLAGS: u16 = 3;
pub const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
// data
pub const NFTA_DATA_VALUE: u16 = 1;
pub const NFTA_DATA_VERDICT: u16 = 2;
pub const NFTA_VERDICT_CODE: u16 = 1;
pub const NFTA_VERDICT_CHAIN: u16 = 2;

/// Appends netlink attributes (4-byte aligned TLVs) to a buffer.
#[derive(Default, Debug, Clone)]
pub struct AttrWriter {
    pub buf: Vec<u8>,
}

impl AttrWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    pub fn put_u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.put(ty, &v.to_be_bytes())
    }

    pub fn put_u64(&mut self, ty: u16, v: u64) -> &mut Self {
        self.put(ty, &v.to_be_bytes())
    }

    /// A NUL-terminated string, as the kernel's `NLA_STRING` policies and `nft` expect.
    pub fn put_str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.put(ty, &v)
    }

    pub fn nest(&mut self, ty: u16, f: impl FnOnce(&mut AttrWriter)) -> &mut Self {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        f(self);
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self.buf[start + 2..start + 4].copy_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
}

/// Iterates over the attributes in `buf`, yielding `(type without flags, payload, offset of the
/// attribute header within buf)`. Stops silently at a malformed attribute: dumps may contain
/// objects made by other tools, and we never want to fail on them.
pub fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8], usize)> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        if off + 4 > buf.len() {
            return None;
        }
        let len = u16::from_ne_bytes([buf[off], buf[off + 1]]) as usize;
        let ty = u16::from_ne_bytes([buf[off + 2], buf[off + 3]]) & NLA_TYPE_MASK;
        if len < 4 || off + len > buf.len() {
            return None;
        }
        let item = (ty, &buf[off + 4..off + len], off);
        off += (len + 3) & !3;
        Some(item)
    })
}

/// The payload of the first attribute of type `ty`.
pub fn attr(buf: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(buf).find(|(t, _, _)| *t == ty).map(|(_, p, _)| p)
}

pub fn attr_u32(buf: &[u8], ty: u16) -> Option<u32> {
    attr(buf, ty).and_then(be_u32)
}

pub fn attr_u64(buf: &[u8], ty: u16) -> Option<u64> {
    attr(buf, ty)
        .and_then(|p| p.get(..8))
        .map(|p| u64::from_be_bytes(p.try_into().unwrap()))
}

pub fn attr_str(buf: &[u8], ty: u16) -> Option<String> {
    attr(buf, ty).map(cstr)
}

pub fn be_u32(p: &[u8]) -> Option<u32> {
    p.get(..4).map(|p| u32::from_be_bytes(p.try_into().unwrap()))
}

/// A string attribute, without its trailing NUL(s).
pub fn cstr(p: &[u8]) -> String {
    let end = p.iter().position(|&b| b == 0).unwrap_or(p.len());
    String::from_utf8_lossy(&p[..end]).into_owned()
}

/// Encodes a libnftnl userdata blob holding a single comment TLV: type, length, bytes + NUL.
/// (The kernel treats userdata as opaque; `nft` decodes it to `comment "…"`.)
pub fn udata_comment(comment: &str) -> Vec<u8> {
    // The TLV length is one byte, and nft caps comments at 128 characters.
    let mut s = comment.as_bytes();
    if s.len() > 128 {
        s = &s[..128];
    }
    let mut v = vec![UDATA_COMMENT, (s.len() + 1) as u8];
    v.extend_from_slice(s);
    v.push(0);
    v
}

/// Finds the comment TLV in a libnftnl userdata blob (other TLVs are skipped).
pub fn udata_find_comment(mut p: &[u8]) -> Option<String> {
    while p.len() >= 2 {
        let (ty, len) = (p[0], p[1] as usize);
        if p.len() < 2 + len {
            return None;
        }
        if ty == UDATA_COMMENT {
            return Some(cstr(&p[2..2 + len]));
        }
        p = &p[2 + len..];
    }
    None
}

/// Builds one complete netlink message: nlmsghdr + nfgenmsg + attributes.
pub fn nlmsg(msg_type: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + NFGENMSG_LEN + attrs.len();
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&(len as u32).to_ne_bytes());
    v.extend_from_slice(&msg_type.to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills ours in
    v.push(family);
    v.push(0); // NFNETLINK_V0
    v.extend_from_slice(&res_id.to_be_bytes());
    v.extend_from_slice(attrs);
    v
}

/// The nfnetlink message type of an nf_tables message.
pub fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// A received netlink message, split into its header fields and body.
#[derive(Debug)]
pub struct NlMsg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub body: &'a [u8],
}

/// Splits a receive buffer into netlink messages.
pub fn nlmsgs(buf: &[u8]) -> impl Iterator<Item = NlMsg<'_>> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        if off + NLMSG_HDRLEN > buf.len() {
            return None;
        }
        let h = &buf[off..];
        let len = u32::from_ne_bytes(h[0..4].try_into().unwrap()) as usize;
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            return None;
        }
        let m = NlMsg {
            ty: u16::from_ne_bytes([h[4], h[5]]),
            flags: u16::from_ne_bytes([h[6], h[7]]),
            seq: u32::from_ne_bytes(h[8..12].try_into().unwrap()),
            body: &h[NLMSG_HDRLEN..len],
        };
        off += (len + 3) & !3;
        Some(m)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attr_encoding() {
        let mut w = AttrWriter::new();
        w.put_str(1, "ab").nest(4, |w| {
            w.put_u32(1, 0x0102_0304);
        });
        assert_eq!(
            w.buf,
            [
                7, 0, 1, 0, b'a', b'b', 0, 0, // "ab\0" padded
                12, 0, 4, 0x80, // nested, len 12
                8, 0, 1, 0, 1, 2, 3, 4, // big-endian u32
            ]
        );
        let got: Vec<_> = attrs(&w.buf).map(|(t, p, _)| (t, p.len())).collect();
        assert_eq!(got, [(1, 3), (4, 8)]);
    }

    #[test]
    fn comment_udata_round_trip() {
        let u = udata_comment("hello");
        assert_eq!(u, b"\x00\x06hello\x00");
        assert_eq!(udata_find_comment(&[1, 1, 9, 0, 2, b'x', 0]).as_deref(), Some("x"));
        assert_eq!(udata_find_comment(&u).as_deref(), Some("hello"));
    }
}
