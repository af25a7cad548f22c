use super::*;

#[test]
fn parses_each_call_and_refuses_bad_input() {
    assert_eq!(
        parse(
            Method::Get,
            "/api/v1/connections",
            "topic=news&limit=5&cursor=7"
        ),
        Ok(ApiCall::Connections {
            filter: Filter {
                topic: Some("news".into()),
                sub: None
            },
            page: Page {
                limit: 5,
                cursor: 7
            }
        })
    );
    assert_eq!(
        parse(Method::Delete, "/api/v1/connections/42", "reason=bye%0Anow"),
        Ok(ApiCall::CloseConnection {
            id: 42,
            reason: "bye now".into()
        })
    );
    assert_eq!(
        parse(Method::Get, "/api/v1/connections", "limit=1001")
            .unwrap_err()
            .status,
        400
    );
    assert_eq!(
        parse(Method::Get, "/api/v1/connections", "limit=0")
            .unwrap_err()
            .status,
        400
    );
    assert_eq!(
        parse(Method::Delete, "/api/v1/connections/x", "")
            .unwrap_err()
            .reason,
        BAD_ID.reason
    );
    assert_eq!(
        parse(Method::Get, "/api/v1/history", "")
            .unwrap_err()
            .reason,
        NEED_TOPIC.reason
    );
    let err = parse(Method::Get, "/api/v1/disconnect", "").unwrap_err();
    assert_eq!((err.status, err.allow), (405, Some("POST, OPTIONS")));
    assert_eq!(
        parse(Method::Get, "/api/v1/nope", "").unwrap_err().status,
        404
    );
    assert!(ApiCall::Bans.needs_admin());
    assert!(!ApiCall::History {
        topic: "a".into(),
        after: None,
        limit: 1
    }
    .needs_admin());
}

#[test]
fn revoke_bodies() {
    let r = parse_revoke(br#"{"sub":"alice","ban_secs":60}"#).unwrap();
    assert_eq!(r.filter.sub.as_deref(), Some("alice"));
    assert_eq!(r.ban_secs, 60);
    assert_eq!(r.reason, "revoked by an operator");
    assert!(parse_revoke(br#"{"topic":"x"}"#).is_ok());
    assert_eq!(parse_revoke(b"{}").unwrap_err().reason, NEED_TARGET.reason);
    assert_eq!(
        parse_revoke(br#"{"topic":"x","ban_secs":5}"#)
            .unwrap_err()
            .reason,
        BAN_NEEDS_SUB.reason
    );
    assert!(parse_revoke(br#"{"sub":"a","ban_secs":604801}"#).is_err());
    assert!(parse_revoke(br#"{"sub":"a","extra":1}"#).is_err());
    assert!(parse_revoke(b"not json").is_err());
}

#[test]
fn json_shapes() {
    let c = ConnInfo {
        id: 3,
        peer: "127.0.0.1:5000".into(),
        kind: Kind::Sse,
        topics: vec!["news".into(), "room/*".into()],
        sub: Some("al\"ice".into()),
        age_ms: 12,
        bytes_written: 100,
        bytes_queued: 0,
        events_behind: 2,
    };
    assert_eq!(
        render_connections(&[c], Some(4)),
        "{\"connections\":[{\"id\":3,\"peer\":\"127.0.0.1:5000\",\"kind\":\"sse\",\
         \"topics\":[\"news\",\"room/*\"],\"sub\":\"al\\\"ice\",\"age_ms\":12,\
         \"bytes_written\":100,\"bytes_queued\":0,\"events_behind\":2}],\"next_cursor\":4}\n"
    );
    let topics: [Box<str>; 1] = ["a".into()];
    let h = render_history(
        &[HistoryEvent {
            id: "r-1",
            event: None,
            data: "x\ny",
            topics: &topics,
        }],
        Some("expired"),
        false,
    );
    assert_eq!(
        h,
        "{\"events\":[{\"id\":\"r-1\",\"event\":null,\"topics\":[\"a\"],\"data\":\"x\\ny\"}],\
         \"reset\":\"expired\",\"more\":false}\n"
    );
    assert_eq!(clip_reason(&"é".repeat(150)).len(), 200);
}

#[test]
fn control_messages_round_trip_and_refuse_the_rest() {
    let revoke = parse_revoke(br#"{"sub":"alice","ban_secs":60,"reason":"spam"}"#).unwrap();
    let data = encode_control("node-a", &revoke);
    assert_eq!(decode_control(&data), Some(("node-a".to_owned(), revoke)));
    assert_eq!(decode_control("{}"), None);
    assert_eq!(decode_control("not json"), None);
    let no_target = r#"{"node":"n","sub":null,"topic":null,"ban_secs":0,"reason":""}"#;
    assert_eq!(decode_control(no_target), None);
    assert!(
        !crate::http::request::valid_topic(CONTROL_TOPIC),
        "clients cannot name it"
    );
    assert_eq!(render_closed(2, 0, false), "{\"closed\":2}\n");
    assert_eq!(
        render_closed(2, 5, true),
        "{\"closed\":2,\"banned_secs\":5,\"cluster\":true}\n"
    );
}
