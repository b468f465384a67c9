//! `cni-multi explain <plugin>` and `cni-multi <plugin> --help`: every config key a plugin
//! accepts, with its type, default and meaning.
//!
//! The tables cannot drift from the parsers: a unit test reads each plugin's config struct
//! from its source file (the serde field names and renames the parser itself uses) and fails
//! when a key is parsed but not described here, or described but not parsed; another fails
//! when a plugin in the table of plugins has no entry here.

/// One config key.
pub struct Key {
    pub name: &'static str,
    pub ty: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

/// A plugin's keys, and where its parser's struct lives (for the drift test).
pub struct PluginKeys {
    pub plugin: &'static str,
    /// (source file under src/, config struct name); None when only the common keys apply.
    pub parser: Option<(&'static str, &'static str)>,
    /// Where the keys sit: "" (top level) or e.g. "ipam" for IPAM plugins.
    pub under: &'static str,
    pub keys: &'static [Key],
}

const fn k(name: &'static str, ty: &'static str, default: &'static str, meaning: &'static str) -> Key {
    Key {
        name,
        ty,
        default,
        meaning,
    }
}

/// The keys every plugin reads (cni::config::NetConf).
pub static COMMON: &[Key] = &[
    k(
        "cniVersion",
        "string",
        "\"0.1.0\"",
        "the spec version of this config and of the result",
    ),
    k(
        "name",
        "string",
        "required",
        "the network name; part of every attachment's identity",
    ),
    k("type", "string", "required", "the plugin's name"),
    k(
        "ipam",
        "object",
        "none",
        "the IPAM plugin to delegate to: {\"type\": ..., its own keys}",
    ),
    k(
        "dns",
        "object",
        "none",
        "nameservers, domain, search, options to report in the result",
    ),
    k(
        "prevResult",
        "object",
        "none",
        "the previous plugin's result (chained plugins; set by the runtime)",
    ),
    k(
        "runtimeConfig",
        "object",
        "{}",
        "capability arguments from the runtime (portMappings, bandwidth, ips, mac, ...)",
    ),
    k(
        "args",
        "object",
        "none",
        "extra arguments, e.g. {\"cni\": {\"ips\": [...]}}",
    ),
    k(
        "cni.dev/valid-attachments",
        "list",
        "none",
        "GC: the attachments to keep (set by the runtime)",
    ),
    k(
        "cni.dev/attachments",
        "list",
        "none",
        "GC: old spelling of cni.dev/valid-attachments",
    ),
];

/// bridge's and ptp's masquerading.
const IP_MASQ: Key = k(
    "ipMasq",
    "bool",
    "false",
    "masquerade traffic from the pod leaving its subnet",
);
const IP_MASQ_BACKEND: Key = k("ipMasqBackend", "string", "\"\" (iptables if the node uses iptables, else nftables)", "iptables: the reference's own nat rules (CNI-<hash> chain in ip/ip6 nat), written over netlink; nftables: upstream's table inet cni_plugins_masquerade; unset: iptables when an iptables executable or iptables' tables are on the node (doc/firewall.md); DEL removes both");
/// macvlan's and ipvlan's parent (vlan's is required).
const MASTER: Key = k("master", "string", "the default route's interface", "parent interface");
const MTU: Key = k("mtu", "integer", "0 (kernel default)", "MTU of the container interface");
const LINK_IN_CONTAINER: Key = k(
    "linkInContainer",
    "bool",
    "false",
    "the master interface is in the container's netns, not the node's",
);

// Why two copies: the entries are rows of one table, alike in shape only (see below).
/// One entry a plugin, one row a key. The rows of different plugins look alike (and
/// `duplicates` pairs them) because they are rows of one table, not repeated logic: a key
/// several plugins read with the same meaning is one const above (MTU, MASTER, IP_MASQ …),
/// and each plugin lists its keys here once, beside the file of its parser, so that the drift
/// test below compares the two.
pub static PLUGINS: &[PluginKeys] = &[
    PluginKeys {
        plugin: "bridge",
        parser: Some(("interface/bridge.rs", "BridgeConf")),
        under: "",
        keys: &[
            k("bridge", "string", "\"cni0\"", "name of the bridge on the node (created if missing)"),
            k("isGateway", "bool", "false", "give the bridge the gateway address of each subnet"),
            k("isDefaultGateway", "bool", "false", "isGateway, plus a default route in the container via the bridge"),
            k("forceAddress", "bool", "false", "replace a different gateway address already on the bridge"),
            IP_MASQ,
            IP_MASQ_BACKEND,
            MTU,
            k("hairpinMode", "bool", "false", "let a pod reach itself through the bridge (e.g. via its host port)"),
            k("promiscMode", "bool", "false", "put the bridge in promiscuous mode"),
            k(
                "vlan",
                "integer",
                "0 (none)",
                "VLAN ID of the pod's bridge port (1-4094), PVID untagged; with vlanTrunk its native VLAN",
            ),
            k(
                "vlanTrunk",
                "list",
                "none",
                "tagged VLANs of a trunk port: [{\"id\": N} | {\"minID\": A, \"maxID\": B}]; without vlan, VLAN 1 is native",
            ),
            k(
                "preserveDefaultVlan",
                "bool",
                "false",
                "keep the port's VLAN 1 when vlan or vlanTrunk is set (default false since upstream v1.8.0)",
            ),
            k("macspoofchk", "bool", "false", "drop frames from the pod with another source MAC (nftables)"),
            k("enabledad", "bool", "false", "run IPv6 duplicate address detection on the container interface"),
            k("disableContainerInterface", "bool", "false", "leave the container interface down"),
            k("portIsolation", "bool", "false", "isolate pod ports from each other (bridge port isolation)"),
        ],
    },
    PluginKeys {
        plugin: "bandwidth",
        parser: Some(("meta/bandwidth.rs", "const KEYS")),
        under: "",
        keys: &[
            k("ingressRate", "integer", "0", "bits/s into the pod (TBF on the host veth); with ingressBurst"),
            k("ingressBurst", "integer", "0", "bits of burst into the pod; burst/8 must fit 32 bits"),
            k("egressRate", "integer", "0", "bits/s out of the pod (TBF on an IFB the host veth redirects to)"),
            k("egressBurst", "integer", "0", "bits of burst out of the pod; all four zero = pass-through"),
        ],
    },
    PluginKeys {
        plugin: "dummy",
        parser: Some(("interface/dummy.rs", "DummyConf")),
        under: "",
        keys: &[],
    },
    PluginKeys {
        plugin: "host-device",
        parser: Some(("interface/host_device.rs", "HostDeviceConf")),
        under: "",
        keys: &[
            k("device", "string", "one of the four", "name of the node's interface to move into the container"),
            k("hwaddr", "string", "one of the four", "pick the interface by MAC address"),
            k("kernelpath", "string", "one of the four", "pick the interface by its /sys/devices path"),
            k("pciBusID", "string", "one of the four", "pick the interface by PCI address (e.g. 0000:00:1f.6)"),
        ],
    },
    PluginKeys {
        plugin: "ipvlan",
        parser: Some(("interface/ipvlan.rs", "IpvlanConf")),
        under: "",
        keys: &[
            MASTER,
            k("mode", "string", "\"l2\"", "l2, l3 or l3s"),
            MTU,
            LINK_IN_CONTAINER,
        ],
    },
    PluginKeys {
        plugin: "loopback",
        parser: None,
        under: "",
        keys: &[],
    },
    PluginKeys {
        plugin: "macvlan",
        parser: Some(("interface/macvlan.rs", "MacvlanConf")),
        under: "",
        keys: &[
            MASTER,
            k("mode", "string", "\"bridge\"", "bridge, private, vepa or passthru"),
            MTU,
            k("mac", "string", "random", "MAC address of the container interface"),
            LINK_IN_CONTAINER,
            k("bcqueuelen", "integer", "0 (kernel default)", "broadcast queue length"),
        ],
    },
    PluginKeys {
        plugin: "ptp",
        parser: Some(("interface/ptp.rs", "PtpConf")),
        under: "",
        keys: &[
            IP_MASQ,
            IP_MASQ_BACKEND,
            MTU,
        ],
    },
    PluginKeys {
        plugin: "tap",
        parser: Some(("interface/tap.rs", "TapConf")),
        under: "",
        keys: &[
            k("multiQueue", "bool", "false", "create a multi-queue tap"),
            MTU,
            k("mac", "string", "random", "MAC address of the tap"),
            k("owner", "integer", "none", "user ID that owns the tap"),
            k("group", "integer", "none", "group ID that owns the tap"),
            k(
                "selinuxContext",
                "string",
                "none",
                "SELinux context to create the tap in (refused, code 2, on a host without SELinux)",
            ),
            k("bridge", "string", "none", "a bridge in the container's netns to attach the tap to"),
        ],
    },
    PluginKeys {
        plugin: "vlan",
        parser: Some(("interface/vlan.rs", "VlanConf")),
        under: "",
        keys: &[
            k("master", "string", "required", "parent interface"),
            k("vlanId", "integer", "required", "VLAN ID (0-4094)"),
            MTU,
            LINK_IN_CONTAINER,
        ],
    },
    PluginKeys {
        plugin: "host-local",
        parser: Some(("ipam/host_local/mod.rs", "IpamIn")),
        under: "ipam",
        keys: &[
            k("ranges", "list", "required", "range sets: [[{\"subnet\", \"rangeStart\", \"rangeEnd\", \"gateway\"}]], one address per set"),
            k("routes", "list", "none", "routes to report: [{\"dst\": \"0.0.0.0/0\", \"gw\": ...}]"),
            k("dataDir", "string", "\"/var/lib/cni/networks\"", "where the reservation files live (one dir per network)"),
            k("resolvConf", "string", "none", "a resolv.conf to report as the result's DNS"),
            k("subnet", "string", "none", "legacy single range (instead of ranges): its subnet"),
            k("rangeStart", "string", "the subnet's first host", "legacy single range: first address handed out"),
            k("rangeEnd", "string", "the subnet's last host", "legacy single range: last address handed out"),
            k("gateway", "string", "the subnet's first host", "legacy single range: the gateway"),
        ],
    },
    PluginKeys {
        plugin: "static",
        parser: Some(("ipam/static_ipam.rs", "IpamIn")),
        under: "ipam",
        keys: &[
            k("addresses", "list", "none", "[{\"address\": \"10.0.0.5/24\", \"gateway\": ...}] (also from CNI_ARGS IP=, args, runtimeConfig ips)"),
            k("routes", "list", "none", "routes to report"),
            k("dns", "object", "none", "DNS to report"),
        ],
    },
    PluginKeys {
        plugin: "dhcp",
        parser: Some(("ipam/dhcp/mod.rs", "IpamIn")),
        under: "ipam",
        keys: &[
            k("daemonSocketPath", "string", "\"/run/cni/dhcp.sock\"", "the socket of the dhcp daemon (ours or the reference's: both speak Go net/rpc), which holds and renews the leases"),
            k("request", "list", "subnet mask, router, DNS, domain, search, classless routes", "options to ask for: [{\"option\": name or number, \"skipDefault\": bool}]; skipDefault drops the defaults; \"33\" asks for classful static routes, which become routes when option 121 is absent"),
            k("provide", "list", "none", "options to send: [{\"option\": \"host-name\", \"value\": ..., \"fromArg\": \"K8S_POD_NAME\"}]: fromArg's CNI_ARGS value when the runtime sends that key (even empty), else value; one per option code, a later entry wins"),
            k("priority", "int", "none", "metric of the returned routes"),
        ],
    },
    PluginKeys {
        plugin: "firewall",
        parser: Some(("meta/firewall/mod.rs", "FirewallConf")),
        under: "",
        keys: &[
            k("backend", "string", "\"\" (firewalld when it runs, else iptables if the node uses iptables, else nftables)", "firewalld: the pod's addresses into firewalldZone over D-Bus (code 11 naming the bus when firewalld is not there); iptables: the reference's own rules in iptables' filter table (CNI-FORWARD, the admin chain, the FORWARD jump, made if missing); nftables: our table inet cni_firewall; unset: firewalld when it owns org.fedoraproject.FirewallD1 on the system bus ($DBUS_SYSTEM_BUS_ADDRESS), else iptables when an iptables executable or iptables' tables are on the node (doc/firewall.md); DEL removes every kind"),
            k("iptablesAdminChainName", "string", "\"CNI-ADMIN\"", "the operators' chain, jumped to before the pod's rules"),
            k("ingressPolicy", "string", "\"open\"", "open, same-bridge or isolated"),
            k("firewalldZone", "string", "\"trusted\"", "firewalld backend: the zone each pod address is bound to (addSource, runtime configuration)"),
        ],
    },
    PluginKeys {
        plugin: "flannel",
        parser: Some(("meta/flannel.rs", "FlannelConf")),
        under: "",
        keys: &[
            k("cniVersion", "string", "\"0.1.0\"", "the spec version"),
            k("name", "string", "required", "the network name"),
            k("subnetFile", "string", "\"/run/flannel/subnet.env\"", "flanneld's FLANNEL_NETWORK/SUBNET/MTU/IPMASQ file"),
            k("dataDir", "string", "\"/var/lib/cni/flannel\"", "where the delegate's config is saved for DEL"),
            k("delegate", "object", "{\"type\": \"bridge\"}", "the plugin to delegate to, with keys merged in"),
            k("ipam", "object", "host-local over the node's subnet", "IPAM for the delegate"),
            k("runtimeConfig", "object", "{}", "passed on to the delegate"),
            k("prevResult", "object", "none", "the previous plugin's result"),
            k("cni.dev/valid-attachments", "list", "none", "GC: the attachments to keep"),
            k("cni.dev/attachments", "list", "none", "GC: old spelling"),
        ],
    },
    PluginKeys {
        plugin: "portmap",
        parser: Some(("meta/portmap/mod.rs", "PortMapConf")),
        under: "",
        keys: &[
            k("snat", "bool", "true", "masquerade hairpin and localhost traffic to mapped ports"),
            k("masqAll", "bool", "false", "masquerade all traffic to mapped ports, whatever its source"),
            k("markMasqBit", "integer", "13", "the fwmark bit (0-31) the iptables layout marks traffic to masquerade with; checked, and unused, with nftables"),
            k("externalSetMarkChain", "string", "none", "iptables layout: an existing chain that sets the mark instead (e.g. KUBE-MARK-MASQ); implies iptables"),
            k("conditionsV4", "list", "none", "extra matches on the IPv4 entry rules: iptables arguments (-s, -d, -i, -o, !, -m comment, -m tcp|udp --sport/--dport) imply iptables, nft matches (ip saddr, iifname ...) nftables"),
            k("conditionsV6", "list", "none", "extra matches on the IPv6 entry rules, as conditionsV4"),
            k("backend", "string", "unset: the node's", "iptables (the reference's CNI-HOSTPORT-* nat chains) or nftables (upstream's ip/ip6 cni_hostport); unset: an option above that only one layout has, else iptables when the node uses iptables, else nftables"),
        ],
    },
    PluginKeys {
        plugin: "sbr",
        parser: Some(("meta/sbr.rs", "SbrConf")),
        under: "",
        keys: &[
            k("table", "integer", "none (first free >= 100)", "only add rules pointing at this table; move no routes"),
            k("gateways", "list", "none", "static default gateways, at most one per family (win over the IP's gateway)"),
            k("addSourceHints", "bool", "false", "keep the subnet route in main with src <ip> scope link"),
        ],
    },
    PluginKeys {
        plugin: "vrf",
        parser: Some(("meta/vrf.rs", "VrfConf")),
        under: "",
        keys: &[
            k("vrfname", "string", "required", "the VRF to put the interface in (made in the container netns when missing; also spelt vrfName)"),
            k("table", "integer", "0 (first free >= 1)", "the VRF's routing table; an existing VRF with another table is an error"),
        ],
    },
    PluginKeys {
        plugin: "tuning",
        parser: Some(("meta/tuning.rs", "TuningConf")),
        under: "",
        keys: &[
            k("dataDir", "string", "\"/run/cni/tuning\"", "where the interface's old settings are saved for DEL"),
            k("sysctl", "object", "none", "net.* sysctls to set in the container: {\"net.core.somaxconn\": \"500\"}"),
            k("mac", "string", "none", "MAC address to set"),
            k("promisc", "bool", "none", "promiscuous mode"),
            k("mtu", "integer", "none", "MTU to set"),
            k("txQLen", "integer", "none", "transmit queue length"),
            k("allmulti", "bool", "none", "all-multicast mode"),
            k("args", "object", "none", "the same settings from args.cni (with CNI_ARGS overrides)"),
        ],
    },
];

pub fn lookup(plugin: &str) -> Option<&'static PluginKeys> {
    PLUGINS.iter().find(|p| p.plugin == plugin)
}

/// `dhcp daemon`'s flags (the reference's, and -statefile); the names are
/// `ipam::dhcp::daemon::FLAGS` (a test keeps them the same).
pub static DHCP_DAEMON_FLAGS: &[Key] = &[
    k(
        "-socketpath",
        "path",
        "/run/cni/dhcp.sock",
        "where to listen (Go net/rpc, as the reference's daemon), under -hostprefix",
    ),
    k(
        "-hostprefix",
        "path",
        "none",
        "the host's root as the daemon sees it (in a container): prefixed to netns paths, -socketpath and -statefile",
    ),
    k(
        "-pidfile",
        "path",
        "none",
        "write the daemon's pid there (absolute, not prefixed)",
    ),
    k("-broadcast", "bool", "false", "ask the server to broadcast its answers"),
    k("-timeout", "Go dur", "10s", "how long an ADD waits for a lease"),
    k(
        "-resendmax",
        "Go dur",
        "62s",
        "the longest wait between retransmissions",
    ),
    k(
        "-resendtimeout",
        "Go dur",
        "208s",
        "how long a lease lost in the background is sought at the fast pace before the longest interval",
    ),
    k(
        "-statefile",
        "path",
        "-socketpath + .leases",
        "where leases are saved for a restarted daemon (ours only), under -hostprefix",
    ),
];

/// The text `explain` prints.
pub fn render(p: &PluginKeys) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let table = |o: &mut String, keys: &[Key]| {
        let w = keys.iter().map(|k| k.name.len()).max().unwrap_or(0).max(4);
        let _ = writeln!(o, "  {:<w$}  {:<7}  {:<24}  meaning", "key", "type", "default");
        for key in keys {
            let _ = writeln!(
                o,
                "  {:<w$}  {:<7}  {:<24}  {}",
                key.name, key.ty, key.default, key.meaning
            );
        }
    };
    let place = if p.under.is_empty() {
        "top-level keys".to_string()
    } else {
        format!("keys of the \"{}\" object", p.under)
    };
    if p.keys.is_empty() {
        let _ = writeln!(o, "{}: no keys of its own; the common keys below apply.", p.plugin);
    } else {
        let _ = writeln!(o, "{} config, {place}:", p.plugin);
        table(&mut o, p.keys);
    }
    let _ = writeln!(o, "\ncommon keys (every plugin):");
    table(&mut o, COMMON);
    if p.plugin == "dhcp" {
        let _ = writeln!(o, "\n`dhcp daemon` flags (-name value, -name=value):");
        table(&mut o, DHCP_DAEMON_FLAGS);
    }
    let _ = writeln!(
        o,
        "\nKeys match in any case, as the reference's Go decoder matches them (\"isgateway\", \"RuntimeConfig\");\n\
         the exact spelling wins, a key given twice is read twice (doc/differences.md)."
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The keys serde reads for `struct_name` in `source`: field names or their `rename`,
    /// without `skip` fields; a `flatten` field adds the keys of its struct (looked up in
    /// `source`, then in `src/pkg/`), except `NetConf`'s, which are the common keys.
    fn parsed_keys(source: &str, struct_name: &str) -> BTreeSet<String> {
        // A plugin that reads its keys by name from a list: `const KEYS: [&str; N] = [...]`.
        if let Some(name) = struct_name.strip_prefix("const ") {
            let line = source
                .lines()
                .find(|l| l.starts_with(&format!("const {name}:")))
                .unwrap_or_else(|| panic!("const {name} not found"));
            let list = line.split_once('=').unwrap().1;
            return list.split('"').skip(1).step_by(2).map(String::from).collect();
        }
        let start = source
            .find(&format!("struct {struct_name} {{"))
            .unwrap_or_else(|| panic!("struct {struct_name} not found"));
        let body = &source[start..];
        let body = &body[body.find('{').unwrap() + 1..body.find("\n}").unwrap()];
        let mut keys = BTreeSet::new();
        let mut attrs = String::new();
        for line in body.lines().map(str::trim) {
            if line.starts_with("#[") {
                attrs.push_str(line);
                continue;
            }
            if line.starts_with("//") || line.is_empty() {
                continue;
            }
            let Some((field, _)) = line.split_once(':') else {
                continue;
            };
            let field = field.trim_start_matches("pub ").trim();
            let a = std::mem::take(&mut attrs);
            if a.contains("serde(skip)") {
                continue;
            }
            if a.contains("flatten") {
                let ty = line.split_once(':').unwrap().1.trim().trim_end_matches(',');
                if ty != "NetConf" {
                    keys.extend(parsed_keys(&struct_source(source, ty), ty));
                }
                continue;
            }
            let name = a
                .split_once("rename = \"")
                .map(|(_, r)| r.split('"').next().unwrap().to_string())
                .unwrap_or_else(|| field.to_string());
            keys.insert(name);
        }
        keys
    }

    /// `source` if it defines `struct ty`, else the file under `src/pkg/` that does.
    fn struct_source(source: &str, ty: &str) -> String {
        fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    files(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let decl = format!("struct {ty} {{");
        if source.contains(&decl) {
            return source.to_string();
        }
        let mut all = Vec::new();
        files(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/pkg"),
            &mut all,
        );
        all.iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .find(|s| s.contains(&decl))
            .unwrap_or_else(|| panic!("struct {ty} not found"))
    }

    fn source(file: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(file);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn every_dhcp_daemon_flag_is_described() {
        let described: Vec<&str> = DHCP_DAEMON_FLAGS.iter().map(|k| &k.name[1..]).collect();
        assert_eq!(described, crate::ipam::dhcp::daemon::FLAGS);
    }

    #[test]
    fn every_key_a_parser_reads_is_described_and_nothing_else() {
        for p in PLUGINS {
            let documented: BTreeSet<String> = p.keys.iter().map(|k| k.name.to_string()).collect();
            assert_eq!(documented.len(), p.keys.len(), "{}: a key is described twice", p.plugin);
            let parsed = match p.parser {
                Some((file, st)) => parsed_keys(&source(file), st),
                None => BTreeSet::new(),
            };
            assert_eq!(
                parsed, documented,
                "{}: parser keys (left) vs described keys (right)",
                p.plugin
            );
        }
        let common: BTreeSet<String> = COMMON.iter().map(|k| k.name.to_string()).collect();
        assert_eq!(parsed_keys(&source("cni/config.rs"), "NetConf"), common);
    }

    #[test]
    fn every_plugin_is_explained() {
        for p in crate::plugins::PLUGINS {
            assert!(lookup(p.name).is_some(), "{} has no entry in explain.rs", p.name);
        }
    }

    #[test]
    fn the_extractor_sees_renames_skips_and_flattens() {
        let src = "struct C {\n    #[serde(flatten)]\n    net: NetConf,\n    #[serde(rename = \"isGateway\", default)]\n    is_gateway: bool,\n    /// doc\n    #[serde(default)]\n    pub mtu: i64,\n    #[serde(skip)]\n    cache: u8,\n}\n";
        let got: Vec<String> = parsed_keys(src, "C").into_iter().collect();
        assert_eq!(got, ["isGateway", "mtu"]);
        let src = "struct C {\n    #[serde(flatten)]\n    more: More,\n    a: u8,\n}\nstruct More {\n    b: u8,\n}\n";
        let got: Vec<String> = parsed_keys(src, "C").into_iter().collect();
        assert_eq!(got, ["a", "b"]);
    }

    #[test]
    fn the_text_lists_the_keys_with_type_and_default() {
        let t = render(lookup("bridge").unwrap());
        assert!(t.contains("bridge config, top-level keys:"), "{t}");
        let line = t.lines().find(|l| l.trim_start().starts_with("isGateway")).unwrap();
        assert!(line.contains("bool") && line.contains("false"), "{line}");
        assert!(t.contains("common keys"), "{t}");
        let t = render(lookup("host-local").unwrap());
        assert!(t.contains("keys of the \"ipam\" object"), "{t}");
        assert!(t.contains("Keys match in any case"), "{t}");
    }

    /// Defaults that upstream changed since Debian's 1.1.1 and cni-multi follows.
    #[test]
    fn changed_defaults_are_the_latest_upstreams() {
        let t = render(lookup("bridge").unwrap());
        let line = t
            .lines()
            .find(|l| l.trim_start().starts_with("preserveDefaultVlan"))
            .unwrap();
        assert!(line.contains("false") && !line.contains("true"), "{line}");
    }
}
