//! Template parsing and rendering.
use super::*;
use crate::secret::Secret;

fn env(name: &str) -> Option<String> {
    match name {
        "SET" => Some("value".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

struct Tok;
impl TokenView for Tok {
    fn access_token(&self) -> &str {
        "abc"
    }
    fn token_type(&self) -> &str {
        "Bearer"
    }
    fn id_token(&self) -> Option<&str> {
        None
    }
    fn claim(&self, path: &[String]) -> Option<String> {
        match path.join(".").as_str() {
            "org.id" => Some("42".into()),
            "" => Some(r#"{"org":{"id":42}}"#.into()),
            _ => None,
        }
    }
}

#[test]
fn parses_literals_and_placeholders_once() {
    let t = Template::parse("Bearer <<oauth.token>>", Context::Header, &env).unwrap();
    assert_eq!(
        t.segments,
        vec![Segment::Lit("Bearer ".into()), Segment::Token]
    );
    assert_eq!(t.render_header(Some(&Tok)).unwrap(), "Bearer abc");
    let t = Template::parse("<<oauth.tokenType>> <<oauth.token>>", Context::Header, &env).unwrap();
    assert_eq!(t.render_header(Some(&Tok)).unwrap(), "Bearer abc");
}

#[test]
fn env_is_resolved_at_load() {
    let t = Template::parse("x-<<env.SET>>-y", Context::Header, &env).unwrap();
    assert_eq!(t.as_literal(), Some("x-value-y"));
    let t = Template::parse("<<env.NOPE:-fallback>>", Context::ClientField, &env).unwrap();
    assert_eq!(t.as_literal(), Some("fallback"));
    let t = Template::parse("<<env.EMPTY:-fallback>>", Context::ClientField, &env).unwrap();
    assert_eq!(t.as_literal(), Some("fallback"));
    let t = Template::parse("<<env.NOPE:->>", Context::ClientField, &env).unwrap();
    assert_eq!(t.as_literal(), Some(""));
    assert_eq!(
        Template::parse("<<env.NOPE>>", Context::Header, &env),
        Err(TemplateError::MissingEnv("NOPE".into()))
    );
}

#[test]
fn rejects_unknown_and_misplaced_placeholders() {
    for (src, ctx) in [
        ("<<oauth.nope>>", Context::Header),
        ("<<nope>>", Context::Header),
        ("<<oauth.tokenDecoded.>>", Context::Header),
        ("<<client.nope>>", Context::Body),
    ] {
        assert!(
            matches!(
                Template::parse(src, ctx, &env),
                Err(TemplateError::Unknown(_))
            ),
            "{src}"
        );
    }
    assert!(matches!(
        Template::parse("<<oauth.token>>", Context::ClientField, &env),
        Err(TemplateError::NotAllowed(..))
    ));
    assert!(matches!(
        Template::parse("<<file:/x>>", Context::Header, &env),
        Err(TemplateError::NotAllowed(..))
    ));
    assert_eq!(
        Template::parse("a <<oauth.token", Context::Header, &env),
        Err(TemplateError::Unterminated)
    );
}

#[test]
fn claims_and_missing_values() {
    let t = Template::parse("<<oauth.tokenDecoded.org.id>>", Context::Header, &env).unwrap();
    assert_eq!(t.render_header(Some(&Tok)).unwrap(), "42");
    let t = Template::parse("<<oauth.idToken>>", Context::Header, &env).unwrap();
    assert_eq!(
        t.render_header(Some(&Tok)),
        Err(RenderError::IdTokenMissing)
    );
}

#[test]
fn files_are_reread_on_every_render() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, "one\n").unwrap();
    let src = format!("<<file:{}>>", path.display());
    let t = Template::parse(&src, Context::ClientField, &env).unwrap();
    assert_eq!(t.render_value(&|_| None).unwrap().expose(), "one");
    std::fs::write(&path, "two\r\n").unwrap();
    assert_eq!(t.render_value(&|_| None).unwrap().expose(), "two");
}

#[test]
fn debug_never_shows_literal_values() {
    let t = Template::parse("secret-<<env.SET>>-<<oauth.token>>", Context::Header, &env).unwrap();
    let shown = format!("{t:?}");
    assert!(
        !shown.contains("secret") && !shown.contains("value"),
        "{shown}"
    );
    assert!(shown.contains("Token"), "{shown}");
}

#[test]
fn body_values_are_escaped_for_their_format() {
    let secret = "q\"uo\\te&amp=x\nnl";
    let field = |n: &str| (n == "client_secret").then(|| Secret::new(secret));
    let t = Template::parse(
        r#"{"in": "s=<<client.client_secret>>", "bare": <<client.client_secret>>, "env": "<<env.SET>>"}"#,
        Context::Body,
        &|n| (n == "SET").then(|| "v\"1".to_string()),
    )
    .unwrap();
    let json = t.render_body(&field, BodyFormat::Json).unwrap();
    let v: serde_json::Value = serde_json::from_str(json.expose()).expect("valid JSON");
    assert_eq!(v["in"], format!("s={secret}"));
    assert_eq!(v["bare"], secret, "a bare placeholder is a JSON string");
    assert_eq!(v["env"], "v\"1", "env values are escaped too");
    let t = Template::parse("a=<<client.client_secret>>&b=1", Context::Body, &env).unwrap();
    let form = t.render_body(&field, BodyFormat::Form).unwrap();
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(form.expose().as_bytes())
        .into_owned()
        .collect();
    assert_eq!(
        pairs,
        [("a".into(), secret.into()), ("b".into(), "1".into())]
    );
}

#[test]
fn token_decoded_alone_is_the_whole_claims_object() {
    let t = Template::parse("<<oauth.tokenDecoded>>", Context::Header, &env).unwrap();
    assert!(t.uses_oauth());
    assert_eq!(t.render_header(Some(&Tok)).unwrap(), r#"{"org":{"id":42}}"#);
}

#[test]
fn request_headers_are_for_subject_tokens_only() {
    let t = Template::parse(
        "<<request.header.Authorization>>",
        Context::ClientField,
        &env,
    )
    .unwrap();
    assert_eq!(t.request_header(), Ok(Some("authorization")));
    let t = Template::parse("x<<request.header.A>>", Context::ClientField, &env).unwrap();
    assert!(t.request_header().is_err(), "must stand alone");
    assert!(Template::parse("<<request.header.A>>", Context::Header, &env).is_err());
}
