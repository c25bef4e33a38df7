//! The daemon's protocol behaviour, checked with a raw client (binary and plist).

mod common;

use common::*;
use plist::Value;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use usbmuxd::proto::{decode_device_list, msgtype, ConnectionType, DaemonMessage, Request};
use usbmuxd_testd::*;

fn two_devices() -> TestDaemon {
    TestDaemon::start(DaemonConfig::new().device(TestDevice::usb(3, UDID)).device(TestDevice::network(
        7,
        UDID2,
        Ipv4Addr::LOCALHOST,
    )))
    .unwrap()
}

#[test]
fn list_devices_reports_usb_and_network_devices() {
    let d = two_devices();
    let mut c = Client::connect(&d);
    c.plist(&Request::ListDevices, 5);
    let (h, msg) = c.read_msg();
    assert_eq!((h.version, h.message, h.tag), (1, msgtype::PLIST, 5));
    let DaemonMessage::Dictionary(dict) = msg else { panic!("{msg:?}") };
    let list = decode_device_list(&dict).unwrap().unwrap();
    assert_eq!(list, vec![d.devices()[0].record(), d.devices()[1].record()]);
    assert_eq!(list[1].connection, ConnectionType::Network);
    assert_eq!(list[1].network_address, [0x10, 2, 0, 0, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    let props = dict["DeviceList"].as_array().unwrap()[0].as_dictionary().unwrap()["Properties"]
        .as_dictionary()
        .unwrap()
        .clone();
    assert_eq!(props["LocationID"].as_unsigned_integer(), Some(0x10003));
    assert_eq!(props["ProductID"].as_unsigned_integer(), Some(0x12a8));
    // The connection stays usable for another command.
    c.plist(&Request::ListDevices, 6);
    assert_eq!(c.read_msg().0.tag, 6);
}

#[test]
fn empty_device_list_has_the_real_daemons_size() {
    let d = TestDaemon::start(DaemonConfig::new()).unwrap();
    let mut c = Client::connect(&d);
    c.plist(&Request::ListDevices, 1);
    let raw = c.read_raw();
    assert!(String::from_utf8_lossy(&raw).contains("<key>DeviceList</key>"));
    assert_eq!(raw.len(), 237, "{}", String::from_utf8_lossy(&raw[16..]));
}

#[test]
fn connect_results_in_both_protocols() {
    let d = two_devices();
    // Binary, unknown device: the exact bytes of the spec (§11.3).
    let mut c = Client::connect(&d);
    c.binary(&Request::Connect { device_id: 5, port: 62078 }, 2);
    assert_eq!(c.read_exact(20), [0x14, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0]);
    // Plist, unknown device: 294-byte Result 2; then a port without service: 3, on the same socket.
    c.plist(&Request::Connect { device_id: 5, port: 62078 }, 3);
    let raw = c.read_raw();
    assert_eq!(raw.len(), 294);
    c.plist(&Request::Connect { device_id: 3, port: 1234 }, 4);
    assert_eq!(c.read_result(), 3);
    // Missing DeviceID → 2, missing PortNumber → 1.
    let base = |extra: &[(&str, Value)]| {
        let mut d = dict(&[("MessageType", "Connect".into())]);
        for (k, v) in extra {
            d.insert(k.to_string(), v.clone());
        }
        d
    };
    c.plist_dict(&base(&[("PortNumber", 32498.into())]), 5);
    assert_eq!(c.read_result(), 2);
    c.plist_dict(&base(&[("DeviceID", 3.into())]), 6);
    assert_eq!(c.read_result(), 1);
}

#[test]
fn connect_to_lockdownd_swaps_port_and_serves_lockdown() {
    let d = two_devices();
    let mut c = Client::connect(&d);
    c.plist(&Request::Connect { device_id: 3, port: LOCKDOWND_PORT }, 9);
    assert_eq!(c.read_result(), 0);
    let logged = d.wait_for_request(TIMEOUT, |r| r.message_type() == "Connect").unwrap();
    assert_eq!(logged.integer("PortNumber"), Some(32498));
    assert_eq!(logged.connect_target(), Some((3, LOCKDOWND_PORT)));
    assert!(logged.is_plist());
    assert_eq!(logged.prog_name(), Some("testd-tests"));
    assert_eq!(logged.string("ClientVersionString"), Some("libusbmuxd 2.0.2"));
    assert_eq!((logged.version(), logged.tag()), (1, 9));

    let r = lockdown(&mut c, &dict(&[("Label", "x".into()), ("Request", "QueryType".into())]));
    assert_eq!(r["Type"].as_string(), Some("com.apple.mobile.lockdown"));
    assert_eq!(r["Label"].as_string(), Some("x"));
    let r = lockdown(&mut c, &dict(&[("Request", "GetValue".into())]));
    let values = r["Value"].as_dictionary().unwrap();
    assert_eq!(values["UniqueDeviceID"].as_string(), Some(UDID));
    for key in ["DeviceName", "ProductType", "ProductVersion", "SerialNumber", "DeviceClass", "BuildVersion"] {
        assert!(values.contains_key(key), "{key}");
    }
    let r = lockdown(&mut c, &dict(&[("Request", "GetValue".into()), ("Key", "ProductType".into())]));
    assert_eq!(r["Value"].as_string(), Some("iPhone12,1"));
    let r = lockdown(&mut c, &dict(&[("Request", "GetValue".into()), ("Key", "NoSuchKey".into())]));
    assert_eq!(r["Error"].as_string(), Some("MissingValue"));
    let r = lockdown(&mut c, &dict(&[("Request", "Pair".into())]));
    assert!(r.contains_key("Error"));
    let r = lockdown(&mut c, &dict(&[("Request", "Goodbye".into())]));
    assert_eq!(r["Result"].as_string(), Some("Success"));
    c.expect_eof();
    assert_eq!(d.lockdownd_requests(3, LOCKDOWND_PORT).len(), 6);
}

#[test]
fn services_echo_sink_source_close() {
    let d = TestDaemon::start(
        DaemonConfig::new().device(
            TestDevice::usb(1, UDID)
                .with_service(5000, Service::Source(300_000))
                .with_service(5001, Service::CloseImmediately),
        ),
    )
    .unwrap();
    let open = |port| {
        let mut c = Client::connect(&d);
        c.binary(&Request::Connect { device_id: 1, port }, 1);
        assert_eq!(c.read_result(), 0);
        c
    };
    let mut echo = open(ECHO_PORT);
    let data = source_bytes(200_000);
    echo.send(&data);
    assert!(echo.read_exact(data.len()) == data);

    let mut sink = open(SINK_PORT);
    sink.send(&[7u8; 10_000]);
    drop(sink);
    assert!(d.wait_until(TIMEOUT, |d| d.service_stats(1, SINK_PORT).bytes_received == 10_000));

    let mut source = open(5000);
    assert!(source.read_to_eof() == source_bytes(300_000));
    open(5001).expect_eof();
    let s = d.service_stats(1, ECHO_PORT);
    assert_eq!((s.connections, s.bytes_received, s.bytes_sent), (1, 200_000, 200_000));
}

#[test]
fn header_version_and_length_rules() {
    let d = two_devices();
    let mut c = Client::connect(&d);
    // Version 2 on a fresh connection: binary RESULT 6, connection stays open.
    c.send(&usbmuxd::proto::frame(2, msgtype::LISTEN, 7, &[]));
    assert_eq!(c.read_exact(20), [0x14, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 6, 0, 0, 0]);
    // Unknown binary message → 1; then a plist request switches the connection to plist.
    c.send(&usbmuxd::proto::frame(0, 99, 8, &[]));
    assert_eq!(c.read_exact(20)[16], 1);
    c.plist_dict(&dict(&[("MessageType", "Frobnicate".into())]), 9);
    let (h, m) = c.read_msg();
    assert_eq!((h.version, m), (1, DaemonMessage::Result(1)));
    c.send(&usbmuxd::proto::frame(2, msgtype::LISTEN, 10, &[]));
    let (h, m) = c.read_msg();
    assert_eq!((h.version, h.tag, m), (1, 10, DaemonMessage::Result(6)));
    // Garbage plist and a plist without MessageType: no reply, still open.
    c.send(&usbmuxd::proto::frame(1, msgtype::PLIST, 11, b"<plist>garbage"));
    c.plist_dict(&dict(&[("Hello", "x".into())]), 12);
    c.expect_silence(Duration::from_millis(200));
    c.plist(&Request::ListDevices, 13);
    assert_eq!(c.read_msg().0.tag, 13);
    assert_eq!(d.requests().iter().filter(|r| r.error.is_some()).count(), 2);

    // Lengths < 16 or > 64 KiB: closed without reply.
    for len in [8u32, 65537] {
        let mut c = Client::connect(&d);
        let mut bytes = usbmuxd::proto::frame(0, msgtype::LISTEN, 1, &[]);
        bytes[0..4].copy_from_slice(&len.to_le_bytes());
        c.send(&bytes);
        c.expect_eof();
    }
}

#[test]
fn binary_only_daemon_forces_the_fallback() {
    let d = TestDaemon::start(DaemonConfig::new().binary_only().device(TestDevice::usb(3, UDID))).unwrap();
    let mut c = Client::connect(&d);
    for (i, req) in
        [Request::Listen, Request::ListDevices, Request::Connect { device_id: 3, port: 7 }, Request::ReadBuid]
            .iter()
            .enumerate()
    {
        c.plist(req, i as u32 + 1);
        let raw = c.read_exact(20);
        assert_eq!(raw, [0x14, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, i as u8 + 1, 0, 0, 0, 6, 0, 0, 0], "{req:?}");
    }
    // Binary LISTEN works: RESULT 0 then a 284-byte DEVICE_ADD.
    c.binary(&Request::Listen, 9);
    assert_eq!(c.read_exact(20), [0x14, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
    let add = c.read_raw();
    assert_eq!(add.len(), 284);
    assert_eq!(&add[..16], &[0x1c, 1, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(usbmuxd::proto::DeviceRecord::from_binary(&add[16..]).unwrap(), d.devices()[0].record());
    // Binary CONNECT reaches the echo service.
    let mut e = Client::connect(&d);
    e.binary(&Request::Connect { device_id: 3, port: ECHO_PORT }, 1);
    assert_eq!(e.read_result(), 0);
    e.send(b"old");
    assert_eq!(e.read_exact(3), b"old");
    let versions: Vec<u32> = d.requests().iter().map(|r| r.version()).collect();
    assert_eq!(versions, [1, 1, 1, 1, 0, 0]);
    assert_eq!(d.requests()[5].connect_target(), Some((3, ECHO_PORT)));

    // Switching modes at run time.
    d.set_protocol_mode(ProtocolMode::Plist);
    let mut c = Client::connect(&d);
    c.plist(&Request::ListDevices, 1);
    assert!(matches!(c.read_msg().1, DaemonMessage::Dictionary(_)));
}

#[test]
fn list_devices_can_be_unsupported() {
    let d = TestDaemon::start(DaemonConfig::new().without_list_devices().device(TestDevice::usb(3, UDID))).unwrap();
    let mut c = Client::connect(&d);
    c.plist(&Request::ListDevices, 1);
    assert_eq!(c.read_result(), 1);
    d.set_list_devices(true);
    c.plist(&Request::ListDevices, 2);
    assert!(matches!(c.read_msg().1, DaemonMessage::Dictionary(_)));
}

#[test]
fn listeners_get_events_in_their_protocol() {
    let d = TestDaemon::start(DaemonConfig::new().device(TestDevice::usb(3, UDID))).unwrap();
    let mut p = Client::connect(&d);
    p.plist(&Request::Listen, 1);
    let (h, m) = p.read_msg();
    assert_eq!((h.version, h.tag, m), (1, 1, DaemonMessage::Result(0)));
    let (h, m) = p.read_msg();
    assert_eq!((h.tag, m), (0, DaemonMessage::DeviceAdd(d.devices()[0].record())));
    let mut b = Client::connect(&d);
    b.binary(&Request::Listen, 1);
    assert_eq!(b.read_result(), 0);
    assert!(matches!(b.read_msg().1, DaemonMessage::DeviceAdd(_)));
    assert!(d.wait_for_listeners(2, TIMEOUT));

    let net = TestDevice::network(0, UDID2, Ipv4Addr::new(192, 168, 1, 23));
    let h = d.attach(net.clone()).unwrap();
    assert_eq!(h, 4);
    assert_eq!(d.attach(TestDevice::usb(3, "dup")), Err(ControlError::HandleInUse(3)));
    d.paired(3).unwrap();
    d.detach(3).unwrap();
    assert_eq!(d.detach(3).unwrap_err(), ControlError::NoSuchDevice(3));
    let mut net = net;
    net.handle = 4;
    // The plist listener sees the network device as such; binary records are always USB.
    for (c, kind) in [(&mut p, ConnectionType::Network), (&mut b, ConnectionType::Usb)] {
        let added = match c.read_msg().1 {
            DaemonMessage::DeviceAdd(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!((added.handle, added.connection, added.udid.as_str()), (4, kind, UDID2));
        assert_eq!(c.read_msg().1, DaemonMessage::DevicePaired(3));
        assert_eq!(c.read_msg().1, DaemonMessage::DeviceRemove(3));
    }
    assert_eq!(d.requests().len(), 2);

    // ListListeners shows both listeners.
    let mut q = Client::connect(&d);
    q.plist_dict(&dict(&[("MessageType", "ListListeners".into()), ("ProgName", "asker".into())]), 3);
    let l = q.read_dict();
    let entries = l["ListenerList"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let progs: Vec<&str> =
        entries.iter().map(|e| e.as_dictionary().unwrap()["ProgName"].as_string().unwrap()).collect();
    assert_eq!(progs, ["testd-tests", "unknown"]);

    // A request on a listening connection closes it without reply.
    p.plist(&Request::ListDevices, 2);
    p.expect_eof();
    assert!(d.wait_until(TIMEOUT, |d| d.listener_count() == 1));
    // Raw bytes and forced disconnects for the remaining listener.
    assert_eq!(d.send_to_listeners(b"\x10\0\0\0junkjunkjunk"), 1);
    assert_eq!(b.read_exact(16), b"\x10\0\0\0junkjunkjunk");
    assert_eq!(d.disconnect_listeners(), 1);
    b.expect_eof();
    assert_eq!(d.listener_count(), 0);
}

#[test]
fn pair_records_and_buid() {
    let dir = std::env::temp_dir().join(format!("testd-pair-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = TestDaemon::start(DaemonConfig::new().pair_dir(&dir).device(TestDevice::usb(3, UDID))).unwrap();
    let mut c = Client::connect(&d);
    c.plist(&Request::ReadBuid, 1);
    let buid = c.read_dict()["BUID"].as_string().unwrap().to_string();
    assert_eq!(buid.len(), 36);
    c.plist(&Request::ReadBuid, 2);
    assert_eq!(c.read_dict()["BUID"].as_string(), Some(buid.as_str()));
    let config = std::fs::read_to_string(dir.join("SystemConfiguration.plist")).unwrap();
    assert!(config.contains(&buid));

    let mut listener = Client::connect(&d);
    listener.plist(&Request::Listen, 1);
    assert_eq!(listener.read_result(), 0);
    listener.read_msg();

    let mut record = plist::Dictionary::new();
    record.insert("HostID".into(), "H".into());
    let mut xml = Vec::new();
    plist::Value::Dictionary(record.clone()).to_writer_xml(&mut xml).unwrap();
    let rid = || UDID.to_string();
    c.plist(&Request::ReadPairRecord { record_id: rid() }, 3);
    assert_eq!(c.read_result(), 2);
    // DeviceID 3 with matching UDID → listeners get Paired; a mismatched one still → 0.
    c.plist(&Request::SavePairRecord { record_id: rid(), data: xml.clone(), device_id: 3 }, 4);
    assert_eq!(c.read_result(), 0);
    assert_eq!(listener.read_msg().1, DaemonMessage::DevicePaired(3));
    c.plist(&Request::SavePairRecord { record_id: "OTHER".into(), data: xml.clone(), device_id: 3 }, 5);
    assert_eq!(c.read_result(), 0);
    listener.expect_silence(Duration::from_millis(150));
    c.plist(&Request::ReadPairRecord { record_id: rid() }, 6);
    let data = c.read_dict()["PairRecordData"].as_data().unwrap().to_vec();
    assert_eq!(usbmuxd::proto::xml_to_dict(&data).unwrap(), record);
    assert!(dir.join(format!("{UDID}.plist")).exists());
    // Invalid data → 22.
    c.plist(&Request::SavePairRecord { record_id: rid(), data: b"tiny".to_vec(), device_id: 0 }, 7);
    assert_eq!(c.read_result(), 22);
    c.plist(&Request::DeletePairRecord { record_id: rid() }, 8);
    assert_eq!(c.read_result(), 0);
    c.plist(&Request::DeletePairRecord { record_id: rid() }, 9);
    assert_eq!(c.read_result(), 2);
    // Traversal and odd ids are rejected by all three requests; missing ids too.
    for id in ["../evil", "../lockdown/SystemConfiguration", "a/b", "x.y", ""] {
        c.plist(&Request::SavePairRecord { record_id: id.into(), data: xml.clone(), device_id: 0 }, 10);
        assert_eq!(c.read_result(), 22, "{id}");
        c.plist(&Request::ReadPairRecord { record_id: id.into() }, 11);
        assert_eq!(c.read_result(), 22, "{id}");
        c.plist(&Request::DeletePairRecord { record_id: id.into() }, 12);
        assert_eq!(c.read_result(), 22, "{id}");
    }
    assert!(!dir.parent().unwrap().join("evil.plist").exists());
    for mt in ["ReadPairRecord", "SavePairRecord", "DeletePairRecord"] {
        c.plist_dict(&dict(&[("MessageType", mt.into())]), 13);
        assert_eq!(c.read_result(), 22, "{mt}");
    }
    drop(d);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn misbehaviours_produce_the_documented_bytes() {
    let d = two_devices();
    let result0 = usbmuxd::proto::encode_result(1, 1, 0);
    let list_reply = {
        let mut c = Client::connect(&d);
        c.plist(&Request::ListDevices, 1);
        c.read_raw()
    };

    d.misbehave(Misbehaviour::ShortLength);
    let mut c = Client::connect(&d);
    c.plist(&Request::ListDevices, 1);
    let got = c.read_exact(list_reply.len());
    assert_eq!(got[..4], [8, 0, 0, 0]);
    assert_eq!(got[4..], list_reply[4..]);

    d.misbehave(Misbehaviour::HugeLength);
    c.plist(&Request::ListDevices, 1);
    let got = c.read_exact(list_reply.len());
    assert_eq!(got[..4], [0xff, 0xff, 0xff, 0x7f]);

    d.misbehave(Misbehaviour::TruncatedHeader);
    let mut c = Client::connect(&d);
    c.plist(&Request::ListDevices, 1);
    assert_eq!(c.read_to_eof(), list_reply[..7]);

    d.misbehave(Misbehaviour::TruncatedPayload);
    let mut c = Client::connect(&d);
    c.plist(&Request::ListDevices, 1);
    assert_eq!(c.read_to_eof(), list_reply[..16 + (list_reply.len() - 16) / 2]);

    d.misbehave(Misbehaviour::InvalidPlist);
    let mut c = Client::connect(&d);
    c.plist(&Request::ReadBuid, 4);
    let raw = c.read_raw();
    assert_eq!(&raw[16..], usbmuxd_testd::misbehaviour::INVALID_PLIST);
    assert_eq!(raw[4..16], [1, 0, 0, 0, 8, 0, 0, 0, 4, 0, 0, 0]);

    d.misbehave(Misbehaviour::BinaryPlist);
    c.plist(&Request::ListDevices, 5);
    let raw = c.read_raw();
    assert!(raw[16..].starts_with(b"bplist00"));
    let v = plist::Value::from_reader(std::io::Cursor::new(&raw[16..])).unwrap();
    assert_eq!(v.as_dictionary().unwrap()["DeviceList"].as_array().unwrap().len(), 2);

    d.misbehave(Misbehaviour::WrongKind);
    c.plist(&Request::ListDevices, 1);
    assert_eq!(c.read_raw(), result0);
    d.misbehave(Misbehaviour::WrongKind);
    c.plist(&Request::Connect { device_id: 3, port: 7 }, 1);
    assert!(matches!(c.read_msg().1, DaemonMessage::Dictionary(_)));

    d.misbehave(Misbehaviour::CloseWithoutReply);
    let mut c = Client::connect(&d);
    c.plist(&Request::ListDevices, 1);
    c.expect_eof();

    d.misbehave(Misbehaviour::NeverReply);
    let mut c = Client::connect(&d);
    c.plist(&Request::ListDevices, 1);
    c.expect_silence(Duration::from_millis(300));
    c.plist(&Request::ListDevices, 2);
    assert_eq!(c.read_msg().0.tag, 2);

    d.misbehave(Misbehaviour::Raw(vec![1, 2, 3]));
    c.plist(&Request::ListDevices, 3);
    assert_eq!(c.read_exact(3), [1, 2, 3]);

    d.misbehave(Misbehaviour::Plist(dict(&[("MessageType", "Detached".into())])));
    c.plist(&Request::ListDevices, 3);
    assert_eq!(c.read_msg().1, DaemonMessage::EventWithoutDeviceId);

    d.misbehave(Misbehaviour::Delay(Duration::from_millis(200)));
    let t = Instant::now();
    c.plist(&Request::ListDevices, 4);
    assert_eq!(c.read_msg().0.tag, 4);
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert_eq!(d.armed_misbehaviours(), 0);
}

#[test]
fn connect_and_listen_result_overrides() {
    let d = two_devices();
    d.misbehave(Misbehaviour::ConnectResult(3));
    d.misbehave(Misbehaviour::ListenResult(1));
    // ConnectResult does not fire on Listen and vice versa.
    let mut c = Client::connect(&d);
    c.plist(&Request::Listen, 1);
    assert_eq!(c.read_result(), 1);
    // Still in command state: a Connect gets 3 and no pipe (the echo would answer).
    c.plist(&Request::Connect { device_id: 3, port: ECHO_PORT }, 2);
    assert_eq!(c.read_result(), 3);
    c.plist(&Request::Connect { device_id: 3, port: ECHO_PORT }, 3);
    assert_eq!(c.read_result(), 0);
    c.send(b"x");
    assert_eq!(c.read_exact(1), b"x");
    assert_eq!(d.listener_count(), 0);

    // Aimed and repeated: every ReadBUID gets Result 2, ListDevices is untouched.
    d.misbehave_on(RequestKind::ReadBuid, Misbehaviour::Result(2), Times::Always);
    d.misbehave_on(RequestKind::Connect, Misbehaviour::NeverReply, Times::N(2));
    let mut c = Client::connect(&d);
    for tag in 1..4 {
        c.plist(&Request::ReadBuid, tag);
        assert_eq!(c.read_result(), 2);
        c.plist(&Request::ListDevices, tag);
        assert!(matches!(c.read_msg().1, DaemonMessage::Dictionary(_)));
    }
    for _ in 0..2 {
        c.plist(&Request::Connect { device_id: 3, port: 1 }, 9);
        c.expect_silence(Duration::from_millis(100));
    }
    c.plist(&Request::Connect { device_id: 3, port: 1 }, 9);
    assert_eq!(c.read_result(), 3);
    assert_eq!(d.armed_misbehaviours(), 1);
    d.clear_misbehaviours();
    c.plist(&Request::ReadBuid, 1);
    assert!(c.read_dict().contains_key("BUID"));
}

#[test]
fn version_rejections_do_not_consume_misbehaviours() {
    let d = TestDaemon::start(DaemonConfig::new().binary_only().device(TestDevice::usb(3, UDID))).unwrap();
    d.misbehave(Misbehaviour::ListenResult(1));
    let mut c = Client::connect(&d);
    c.plist(&Request::Listen, 1);
    assert_eq!(c.read_result(), 6);
    c.binary(&Request::Listen, 2);
    assert_eq!(c.read_result(), 1);
}

#[test]
fn stop_and_restart() {
    let d = TestDaemon::start(DaemonConfig::new().device(TestDevice::usb(3, UDID))).unwrap();
    let path = d.socket_path().unwrap().to_path_buf();
    assert!(d.usbmuxd_socket_address().starts_with("UNIX:/"));
    let mut listener = Client::connect(&d);
    listener.plist(&Request::Listen, 1);
    assert_eq!(listener.read_result(), 0);
    let mut pipe = Client::connect(&d);
    pipe.binary(&Request::Connect { device_id: 3, port: ECHO_PORT }, 1);
    assert_eq!(pipe.read_result(), 0);
    let mut silent = Client::connect(&d);
    d.misbehave(Misbehaviour::NeverReply);
    silent.plist(&Request::ListDevices, 1);
    assert!(d.wait_for_listeners(1, TIMEOUT));
    assert!(d.wait_until(TIMEOUT, |d| d.armed_misbehaviours() == 0));

    let t = Instant::now();
    d.stop();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(!d.is_running());
    assert!(!path.exists());
    assert!(Client::try_connect(&d).is_err());
    listener.read_msg(); // the Attached sent before the stop
    listener.expect_eof();
    pipe.expect_eof();
    silent.expect_eof();
    assert_eq!(d.connection_count(), 0);
    d.stop(); // idempotent

    d.restart().unwrap();
    assert!(d.is_running());
    let mut c = Client::connect(&d);
    c.plist(&Request::ListDevices, 1);
    assert_eq!(decode_device_list(&c.read_dict()).unwrap().unwrap().len(), 1);
    d.restart().unwrap(); // restart while running
    Client::connect(&d);
}

#[test]
fn tcp_listener_reports_its_port_and_keeps_it_across_restarts() {
    let d =
        TestDaemon::start(DaemonConfig::tcp("127.0.0.1:0".parse().unwrap()).device(TestDevice::usb(3, UDID))).unwrap();
    let addr = d.tcp_addr().unwrap();
    assert_ne!(addr.port(), 0);
    assert_eq!(d.usbmuxd_socket_address(), format!("127.0.0.1:{}", addr.port()));
    let mut c = Client::connect(&d);
    c.plist(&Request::Connect { device_id: 3, port: ECHO_PORT }, 1);
    assert_eq!(c.read_result(), 0);
    c.send(b"tcp");
    assert_eq!(c.read_exact(3), b"tcp");
    d.stop();
    c.expect_eof();
    assert!(std::net::TcpStream::connect(addr).is_err());
    d.restart().unwrap();
    assert_eq!(d.tcp_addr(), Some(addr));
    let mut c = Client::connect(&d);
    c.plist(&Request::ListDevices, 1);
    c.read_dict();
}

#[test]
fn many_concurrent_clients() {
    let d = std::sync::Arc::new(two_devices());
    let threads: Vec<_> = (0..24)
        .map(|i| {
            let d = std::sync::Arc::clone(&d);
            std::thread::spawn(move || {
                let mut echo = Client::connect(&d);
                echo.binary(&Request::Connect { device_id: 3, port: ECHO_PORT }, 1);
                assert_eq!(echo.read_result(), 0);
                let mut c = Client::connect(&d);
                c.plist(&Request::ListDevices, i);
                assert_eq!(c.read_msg().0.tag, i);
                let msg = format!("client {i}").into_bytes();
                echo.send(&msg);
                assert_eq!(echo.read_exact(msg.len()), msg);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(d.requests().len(), 48);
}

#[test]
fn drop_closes_everything_promptly() {
    let d = two_devices();
    let mut pipe = Client::connect(&d);
    pipe.binary(&Request::Connect { device_id: 3, port: SINK_PORT }, 1);
    assert_eq!(pipe.read_result(), 0);
    let mut listener = Client::connect(&d);
    listener.binary(&Request::Listen, 1);
    assert_eq!(listener.read_result(), 0);
    let mut idle = Client::connect(&d);
    assert!(d.wait_until(TIMEOUT, |d| d.connection_count() == 3));
    let dir = d.socket_path().unwrap().parent().unwrap().to_path_buf();
    let t = Instant::now();
    drop(d);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(!dir.exists(), "temporary directory removed");
    pipe.expect_eof();
    listener.read_to_eof();
    idle.expect_eof();
}
