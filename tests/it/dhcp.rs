//! dhcp IPAM and its daemon against a real DHCP server (dnsmasq) in throw-away namespaces:
//! pods via bridge + dhcp and macvlan + dhcp (needs root and dnsmasq).

use crate::common::dhcp_rig::{client_id_hex, wait_for, DhcpRig, Server};
use crate::common::rig::{first_ip, require_root, tool, TestNs};
use crate::common::veth_rig::Impl;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn ready(test: &str) -> bool {
    crate::common::dhcp_rig::ready(test, require_root(test))
}

fn pod_addrs(p: &TestNs, ifname: &str) -> Vec<String> {
    p.ip_json(&["-4", "addr", "show", "dev", ifname])
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

/// ADD gives a lease: address on the interface, gateway, routes, DNS; dnsmasq shows our client
/// id; CHECK passes; DEL releases it (gone from dnsmasq's lease file) and a second DEL passes.
fn lease_cycle(r: &DhcpRig, p: &TestNs, cid: &str) -> Value {
    let c = r.conf("1.0.0", json!({}));
    let t = Instant::now();
    let res = r.rig.add(&c, cid, p, "eth0").expect_ok().json();
    eprintln!("ADD took {:?}", t.elapsed());
    let ip = first_ip(&res);
    let n: u8 = ip.strip_prefix("10.94.0.").unwrap().parse().unwrap();
    assert!((20..=200).contains(&n), "{res}");
    assert_eq!(res["ips"][0]["address"], format!("{ip}/24"));
    assert_eq!(res["ips"][0]["gateway"], "10.94.0.1", "{res}");
    assert_eq!(res["routes"], json!([{"dst": "0.0.0.0/0", "gw": "10.94.0.1"}]), "{res}");
    // macvlan, like the reference's, reports the config's DNS instead of the IPAM's.
    let dns = match r.server {
        Server::Bridge => {
            json!({"nameservers": ["10.94.0.53"], "domain": "example.test", "search": ["a.example.test"]})
        }
        Server::Uplink => json!({}),
    };
    assert_eq!(res["dns"], dns, "{res}");
    assert_eq!(pod_addrs(p, "eth0"), [format!("{ip}/24")]);
    let routes = p.ip(&["-4", "route", "show", "default"]);
    assert!(routes.contains("via 10.94.0.1 dev eth0"), "{routes}");
    let lease = r
        .lease_of_ip(&ip)
        .unwrap_or_else(|| panic!("no lease for {ip}: {:?}", r.leases()));
    assert_eq!(lease.3, client_id_hex(cid, "eth0"));
    r.rig.check(&c, &res, cid, p, "eth0").expect_ok();
    r.rig.del(&c, cid, p.path_str(), "eth0").expect_ok();
    wait_for(
        || r.lease_of_ip(&ip).is_none(),
        "the lease to be released",
        Duration::from_secs(10),
    );
    r.rig.del(&c, cid, p.path_str(), "eth0").expect_ok();
    // containerd's second DEL has no netns.
    r.rig.del(&c, cid, "", "eth0").expect_ok();
    res
}

#[test]
fn bridge_pod_gets_lease_and_releases_it() {
    if !ready("bridge_pod_gets_lease_and_releases_it") {
        return;
    }
    let r = DhcpRig::new("dhb", Impl::Ours, Server::Bridge);
    let p = r.rig.pod("dhb");
    lease_cycle(&r, &p, "c1");
    assert!(p.link("eth0").is_none());
    // A DEL of an attachment the daemon never knew succeeds.
    r.rig
        .del(&r.conf("1.0.0", json!({})), "never", p.path_str(), "eth0")
        .expect_ok();
}

#[test]
fn macvlan_pod_gets_lease_and_releases_it() {
    if !ready("macvlan_pod_gets_lease_and_releases_it") {
        return;
    }
    let r = DhcpRig::new("dhm", Impl::Ours, Server::Uplink);
    let p = r.rig.pod("dhm");
    lease_cycle(&r, &p, "m1");
    assert!(p.link("eth0").is_none());
}

/// A short T1 from the server (option 58) makes the renewal observable: the daemon sends a
/// REQUEST with the leased address, dnsmasq extends the lease (its expiry moves on).
#[test]
fn lease_is_renewed_at_t1() {
    if !ready("lease_is_renewed_at_t1") {
        return;
    }
    let mut r = DhcpRig::bare("dhr", Impl::Ours, Server::Bridge);
    r.start_dnsmasq(&["--dhcp-option=option:T1,3", "--dhcp-option=option:T2,100"]);
    r.start_daemon(&[]);
    let p = r.rig.pod("dhr");
    let (c, res, ip) = r.add_and_wait_for_renewal("c1", &p);
    let log = std::fs::read_to_string(r.dir.join("dnsmasq.log")).unwrap();
    assert!(log.contains(&format!("DHCPREQUEST(br0) {ip}")), "{log}");
    r.rig.check(&c, &res, "c1", &p, "eth0").expect_ok();
    r.rig.del(&c, "c1", p.path_str(), "eth0").expect_ok();
    wait_for(|| r.lease_of_ip(&ip).is_none(), "the release", Duration::from_secs(10));
}

/// SIGTERM removes socket and pidfile; a new daemon takes the lease up from its state file:
/// CHECK passes, and DEL still releases it.
#[test]
fn restarted_daemon_keeps_the_lease() {
    if !ready("restarted_daemon_keeps_the_lease") {
        return;
    }
    let mut r = DhcpRig::bare("dhd", Impl::Ours, Server::Bridge);
    r.start_dnsmasq(&["--dhcp-option=option:T1,3", "--dhcp-option=option:T2,100"]);
    let pidfile = r.dir.join("dhcp.pid");
    let pf = pidfile.to_str().unwrap().to_string();
    r.start_daemon(&["-pidfile", &pf]);
    let pid = r.daemon.as_ref().unwrap().pid();
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap().trim(), pid.to_string());
    let p = r.rig.pod("dhd");
    let c = r.conf("1.0.0", json!({}));
    let res = r.rig.add(&c, "c1", &p, "eth0").expect_ok().json();
    let ip = first_ip(&res);
    assert!(r.daemon.as_mut().unwrap().terminate(), "daemon did not exit on SIGTERM");
    assert!(!r.socket().exists(), "socket left behind");
    assert!(!pidfile.exists(), "pidfile left behind");
    // The lease stays with the server while no daemon runs.
    assert!(r.lease_of_ip(&ip).is_some());
    let state = std::fs::read_to_string(format!("{}.leases", r.socket().display())).unwrap();
    assert!(state.contains("\"containerId\": \"c1\""), "{state}");

    r.start_daemon(&[]);
    // The socket is bound before the leases are read back: wait for the log line.
    wait_for(
        || r.daemon_log().contains("c1/dh/eth0: restored"),
        "the lease restored",
        Duration::from_secs(10),
    );
    r.rig.check(&c, &res, "c1", &p, "eth0").expect_ok();
    // It goes on renewing (T1 is 3 s).
    let before = r.daemon_log().matches("c1/dh/eth0: renewed").count();
    wait_for(
        || r.daemon_log().matches("c1/dh/eth0: renewed").count() > before,
        "a renewal by the new daemon",
        Duration::from_secs(30),
    );
    r.rig.del(&c, "c1", p.path_str(), "eth0").expect_ok();
    wait_for(|| r.lease_of_ip(&ip).is_none(), "the release", Duration::from_secs(10));
}

/// 50 pods at once on one daemon: all get distinct leases; DEL releases them all.
#[test]
fn fifty_pods_at_once() {
    if !ready("fifty_pods_at_once") {
        return;
    }
    let r = DhcpRig::new("dhn", Impl::Ours, Server::Bridge);
    let c = r.conf("1.0.0", json!({}));
    let pods: Vec<TestNs> = (0..50).map(|i| r.rig.pod(&format!("n{i}"))).collect();
    let t = Instant::now();
    let results: Vec<Value> = std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (r, c) = (&r, &c);
                s.spawn(move || r.rig.add(c, &format!("c{i}"), p, "eth0").expect_ok().json())
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    eprintln!("50 ADDs in parallel took {:?}", t.elapsed());
    let mut ips: Vec<String> = results.iter().map(first_ip).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 50);
    assert_eq!(r.leases().len(), 50);
    for l in r.leases() {
        assert!(l.3.starts_with("00:63"), "{l:?}");
    }
    std::thread::scope(|s| {
        for (i, p) in pods.iter().enumerate() {
            let (r, c) = (&r, &c);
            s.spawn(move || r.rig.del(c, &format!("c{i}"), p.path_str(), "eth0").expect_ok());
        }
    });
    wait_for(|| r.leases().is_empty(), "all releases", Duration::from_secs(10));
}

/// No daemon: ADD fails naming the socket and leaves no interface (bridge and macvlan);
/// DEL passes; STATUS is code 50 until a daemon runs.
#[test]
fn no_daemon() {
    if !ready("no_daemon") {
        return;
    }
    for server in [Server::Bridge, Server::Uplink] {
        let mut r = DhcpRig::bare("dhx", Impl::Ours, server);
        r.start_dnsmasq(&[]);
        let p = r.rig.pod("dhx");
        let c = r.conf("1.0.0", json!({}));
        let o = r.rig.add(&c, "c1", &p, "eth0");
        assert!(!o.success());
        let msg = o.msg();
        assert!(msg.contains(r.socket().to_str().unwrap()), "{msg}");
        assert!(msg.contains("dhcp daemon"), "{msg}");
        assert!(p.link("eth0").is_none(), "interface left behind");
        r.rig.del(&c, "c1", p.path_str(), "eth0").expect_ok();
        let c = r.conf("1.1.0", json!({}));
        let o = r.ipam("STATUS", &c, "", "", "");
        assert_eq!(o.code(), 50, "{}", o.stdout);
        r.start_daemon(&[]);
        r.ipam("STATUS", &c, "", "", "").expect_ok();
    }
}

/// A daemon but no server: ADD fails after -timeout with a clear message; nothing is left.
#[test]
fn no_server() {
    if !ready("no_server") {
        return;
    }
    let mut r = DhcpRig::bare("dhs", Impl::Ours, Server::Bridge);
    r.start_daemon(&["-timeout", "1s"]);
    let p = r.rig.pod("dhs");
    let c = r.conf("1.0.0", json!({}));
    let o = r.rig.add(&c, "c1", &p, "eth0");
    assert!(!o.success());
    let msg = o.msg();
    assert!(msg.contains("no DHCP offer within 1s"), "{msg}");
    assert!(msg.contains("\"eth0\""), "{msg}");
    assert!(p.link("eth0").is_none(), "interface left behind");
    assert_eq!(r.rig.node.ip_json(&["link", "show", "master", "br0"]), json!([]));
    // The daemon forgot it: CHECK of the attachment fails.
    let o = r.ipam("CHECK", &c, "c1", p.path_str(), "eth0");
    assert!(o.msg().contains("no live lease for c1/dh/eth0"), "{}", o.stdout);
}

/// GC releases the leases of attachments that are not in cni.dev/valid-attachments.
#[test]
fn gc_releases_stale_leases() {
    if !ready("gc_releases_stale_leases") {
        return;
    }
    let r = DhcpRig::new("dhg", Impl::Ours, Server::Bridge);
    let c = r.conf("1.1.0", json!({}));
    let (p1, p2) = (r.rig.pod("g1"), r.rig.pod("g2"));
    let ip1 = first_ip(&r.rig.add(&c, "c1", &p1, "eth0").expect_ok().json());
    let ip2 = first_ip(&r.rig.add(&c, "c2", &p2, "eth0").expect_ok().json());
    let mut g = c.clone();
    g["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
    r.rig.run("bridge", "GC", &g, "", "", "", "").expect_ok();
    wait_for(
        || r.lease_of_ip(&ip2).is_none(),
        "the stale lease released",
        Duration::from_secs(10),
    );
    assert!(r.lease_of_ip(&ip1).is_some());
    r.ipam("CHECK", &c, "c1", p1.path_str(), "eth0").expect_ok();
    let e = r.ipam("CHECK", &c, "c2", p2.path_str(), "eth0");
    assert!(!e.success());
    assert!(e.msg().contains("the DHCP daemon holds no live lease for"), "{e}");
    assert!(e.msg().contains("c2"), "{e}");
    // CHECK compares the lease with prevResult.
    let mut k = json!({"cniVersion": "1.1.0", "name": "dh", "type": "dhcp", "ipam": c["ipam"],
        "prevResult": {"cniVersion": "1.1.0", "ips": [{"address": "10.94.0.250/24"}]}});
    let o = r.rig.run("dhcp", "CHECK", &k, "c1", p1.path_str(), "eth0", "");
    assert!(o.msg().contains("not an address of prevResult"), "{}", o.stdout);
    k["prevResult"]["ips"][0]["address"] = json!(format!("{ip1}/24"));
    r.rig
        .run("dhcp", "CHECK", &k, "c1", p1.path_str(), "eth0", "")
        .expect_ok();
}

/// The socket is 0600; calls naming a non-netns path or a bad interface are refused with
/// net/rpc errors; an unknown method gets Go's words; a non-CONNECT HTTP request gets Go's
/// 405; an older cni-multi plugin's JSON line gets a JSON error it prints.
#[test]
fn socket_and_request_validation() {
    if !ready("socket_and_request_validation") {
        return;
    }
    use cni_multi::ipam::dhcp::rpc;
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    let r = DhcpRig::new("dhv", Impl::Ours, Server::Bridge);
    let mode = std::fs::metadata(r.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let raw = |bytes: &[u8]| {
        let mut s = std::os::unix::net::UnixStream::connect(r.socket()).unwrap();
        s.write_all(bytes).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        out
    };
    let call = |method: &str, netns: &str, ifname: &str| {
        let args = rpc::CmdArgs {
            container_id: "c1".into(),
            netns: netns.into(),
            ifname: ifname.into(),
            stdin: br#"{"cniVersion":"1.0.0","name":"dh","ipam":{"type":"dhcp"}}"#.to_vec(),
            ..Default::default()
        };
        let mut b = rpc::CONNECT.to_vec();
        b.extend(rpc::request(method, 3, &args));
        let out = raw(&b);
        assert!(out.starts_with(rpc::CONNECTED), "{out:?}");
        match rpc::read_answer(&out[rpc::CONNECTED.len()..], true).unwrap().unwrap() {
            rpc::Answer::Error(e) => e,
            a => panic!("{a:?}"),
        }
    };
    let not_ns = r.dir.join("dnsmasq.leases");
    let e = call(rpc::ALLOCATE, not_ns.to_str().unwrap(), "eth0");
    assert!(e.contains("is not a network namespace"), "{e}");
    let e = call(rpc::ALLOCATE, "/proc/self/ns/net", "a/b");
    assert!(e.contains("interface name"), "{e}");
    assert_eq!(call("DHCP.Nope", "", ""), "rpc: can't find method DHCP.Nope");
    assert_eq!(call("Other.Allocate", "", ""), "rpc: can't find service Other.Allocate");
    let a = String::from_utf8(raw(b"GET / HTTP/1.1\r\n\r\n")).unwrap();
    assert!(
        a.starts_with("HTTP/1.0 405 ") && a.ends_with("405 must CONNECT\n"),
        "{a}"
    );
    let a = String::from_utf8(raw(b"{\"op\":\"allocate\"}\n")).unwrap();
    let v: Value = serde_json::from_str(&a).unwrap();
    assert!(v["error"]["msg"].as_str().unwrap().contains("speaks Go net/rpc"), "{a}");
    let p = r.rig.pod("dhv");
    let o = r.ipam("ADD", &r.conf("1.0.0", json!({})), "c1", p.path_str(), "eth9");
    assert!(o.msg().contains("interface \"eth9\" not found"), "{}", o.stdout);
}

/// `cni-multi dhcp daemon` works like `dhcp daemon`, and so does systemd socket activation
/// (LISTEN_FDS=1): the daemon serves the passed socket and leaves its file alone on exit.
#[test]
fn cli_form_and_socket_activation() {
    if !ready("cli_form_and_socket_activation") {
        return;
    }
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let mut r = DhcpRig::bare("dha", Impl::Ours, Server::Bridge);
    r.start_dnsmasq(&[]);
    let sock = r.socket();
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let fd = listener.as_raw_fd();
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!(
            "LISTEN_PID=$$ LISTEN_FDS=1 exec {} --net={} -- '{}' dhcp daemon -socketpath /nonexistent/x.sock",
            tool("nsenter").display(),
            r.rig.node.path_str(),
            crate::common::veth_rig::ours().display()
        ))
        .stderr(std::fs::File::create(r.dir.join("daemon.log")).unwrap());
    // SAFETY: dup2 and fcntl are async-signal-safe; the listener ends up at fd 3 as systemd
    // passes it.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec set.
            let rc = if fd == 3 {
                nix::libc::fcntl(3, nix::libc::F_SETFD, 0)
            } else {
                nix::libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    r.daemon = Some(crate::common::dhcp_rig::Proc {
        child: Some(cmd.spawn().unwrap()),
        what: "activated daemon".into(),
    });
    drop(listener);
    let p = r.rig.pod("dha");
    let c = r.conf("1.0.0", json!({}));
    let res = r.rig.add(&c, "c1", &p, "eth0").expect_ok().json();
    assert!(r.daemon_log().contains("(socket activation)"), "{}", r.daemon_log());
    r.rig.del(&c, "c1", p.path_str(), "eth0").expect_ok();
    let ip = first_ip(&res);
    wait_for(|| r.lease_of_ip(&ip).is_none(), "the release", Duration::from_secs(10));
    assert!(r.daemon.as_mut().unwrap().terminate());
    assert!(sock.exists(), "systemd's socket file must stay");
}

/// A NAK at renewal (the server now reserves another address for the pod's MAC) loses the
/// lease: the daemon takes the old address off the interface, gets a new lease, and puts its
/// address and routes on.
#[test]
fn nak_at_renewal_moves_the_pod_to_its_new_lease() {
    if !ready("nak_at_renewal_moves_the_pod_to_its_new_lease") {
        return;
    }
    let mut r = DhcpRig::bare("dhk", Impl::Ours, Server::Bridge);
    r.start_dnsmasq(&["--dhcp-option=option:T1,3", "--dhcp-option=option:T2,100"]);
    r.start_daemon(&[]);
    let p = r.rig.pod("dhk");
    let c = r.conf("1.0.0", json!({}));
    let res = r.rig.add(&c, "c1", &p, "eth0").expect_ok().json();
    let ip = first_ip(&res);
    let mac = res["interfaces"][2]["mac"].as_str().unwrap().to_string();
    let other = if ip == "10.94.0.199" {
        "10.94.0.198"
    } else {
        "10.94.0.199"
    };
    drop(r.dnsmasq.take());
    let _ = std::fs::remove_file(r.leasefile());
    r.start_dnsmasq(&[
        "--dhcp-authoritative",
        &format!("--dhcp-host={mac},{other}"),
        "--dhcp-option=option:T1,3",
        "--dhcp-option=option:T2,100",
    ]);
    wait_for(
        || pod_addrs(&p, "eth0") == [format!("{other}/24")],
        "the pod to move to its new address",
        Duration::from_secs(30),
    );
    let log = r.daemon_log();
    assert!(log.contains("lease lost"), "{log}");
    assert!(log.contains(&format!("removed {ip}/24")), "{log}");
    let routes = p.ip(&["-4", "route", "show", "default"]);
    assert!(routes.contains("via 10.94.0.1 dev eth0"), "{routes}");
    r.rig.del(&c, "c1", p.path_str(), "eth0").expect_ok();
    wait_for(
        || r.lease_of_ip(other).is_none(),
        "the release",
        Duration::from_secs(10),
    );
}

/// `provide` sends the pod's name as host-name (from CNI_ARGS), which dnsmasq records.
#[test]
fn host_name_from_cni_args() {
    if !ready("host_name_from_cni_args") {
        return;
    }
    let r = DhcpRig::new("dhh", Impl::Ours, Server::Bridge);
    let p = r.rig.pod("dhh");
    let c = r.conf(
        "1.0.0",
        json!({"provide": [{"option": "host-name", "fromArg": "K8S_POD_NAME"}]}),
    );
    let args = "IgnoreUnknown=1;K8S_POD_NAME=web-1";
    let res = r
        .rig
        .run("bridge", "ADD", &c, "c1", p.path_str(), "eth0", args)
        .expect_ok()
        .json();
    let lease = r.lease_of_ip(&first_ip(&res)).unwrap();
    assert_eq!(lease.2, "web-1", "{lease:?}");
    r.rig
        .run("bridge", "DEL", &c, "c1", p.path_str(), "eth0", args)
        .expect_ok();
}
