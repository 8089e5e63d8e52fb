//! Config stage 2 for `[telemetry]`: where OTLP traces go (the key, else
//! `OTEL_EXPORTER_OTLP_ENDPOINT`), under which service name, and how many
//! requests without a sampled `traceparent` start a sampled trace.

use toml::Spanned;

use super::diag::{ConfigError, Errors};
use super::model::TelemetrySettings;
use super::raw::RawTelemetry;

pub(super) fn telemetry(
    raw: Option<Spanned<RawTelemetry>>,
    env: &dyn Fn(&str) -> Option<String>,
    errs: &mut Errors,
) -> TelemetrySettings {
    let service_name = env("OTEL_SERVICE_NAME")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "sidekey".into());
    let (endpoint, ratio) = match raw {
        Some(raw) => {
            let raw = raw.into_inner();
            (raw.otlp_endpoint, raw.sample_ratio)
        }
        None => (None, None),
    };
    let sample_ratio = match ratio {
        Some(r) if !(0.0..=1.0).contains(r.get_ref()) => {
            errs.at(
                r.span(),
                format!(
                    "telemetry.sample_ratio: {} is not between 0.0 and 1.0",
                    r.get_ref()
                ),
            );
            1.0
        }
        Some(r) => *r.get_ref(),
        None => 1.0,
    };
    let (text, span) = match endpoint {
        Some(e) => (Some(e.get_ref().clone()), Some(e.span())),
        None => (env("OTEL_EXPORTER_OTLP_ENDPOINT"), None),
    };
    let otlp_endpoint = text.filter(|t| !t.is_empty()).and_then(|t| {
        let key = if span.is_some() {
            "telemetry.otlp_endpoint"
        } else {
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        };
        match url::Url::parse(&t) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            _ => {
                let msg = format!("{key}: {t:?} is not an http:// or https:// URL");
                match span {
                    Some(s) => errs.at(s, msg),
                    None => errs.0.push(ConfigError {
                        span: None,
                        message: msg,
                    }),
                }
                None
            }
        }
    });
    TelemetrySettings {
        otlp_endpoint,
        service_name,
        sample_ratio,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str, env: &[(&str, &str)]) -> (TelemetrySettings, Vec<String>) {
        #[derive(serde::Deserialize)]
        struct Doc {
            telemetry: Option<Spanned<RawTelemetry>>,
        }
        let doc: Doc = toml::from_str(toml_text).unwrap();
        let env = |k: &str| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let mut errs = Errors(Vec::new());
        let s = telemetry(doc.telemetry, &env, &mut errs);
        (s, errs.0.into_iter().map(|e| e.message).collect())
    }

    #[test]
    fn off_by_default_on_with_the_key_or_the_standard_env() {
        let (s, errs) = parse("", &[]);
        assert!(s.otlp_endpoint.is_none() && errs.is_empty());
        assert_eq!((s.service_name.as_str(), s.sample_ratio), ("sidekey", 1.0));
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            ("OTEL_SERVICE_NAME", "orders"),
        ];
        let (s, _) = parse("", &env);
        assert_eq!(s.otlp_endpoint.unwrap().as_str(), "http://env:4318/");
        assert_eq!(s.service_name, "orders");
        let (s, _) = parse(
            "[telemetry]\notlp_endpoint = \"http://cfg:4318\"\nsample_ratio = 0.25",
            &env,
        );
        assert_eq!(s.otlp_endpoint.unwrap().as_str(), "http://cfg:4318/");
        assert_eq!(s.sample_ratio, 0.25);
    }

    #[test]
    fn bad_values_name_their_key() {
        let (_, errs) = parse(
            "[telemetry]\notlp_endpoint = \"otel:4318\"\nsample_ratio = 2.0",
            &[],
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("telemetry.sample_ratio:")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("telemetry.otlp_endpoint:")),
            "{errs:?}"
        );
        let (_, errs) = parse("", &[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://x")]);
        assert!(
            errs[0].starts_with("OTEL_EXPORTER_OTLP_ENDPOINT:"),
            "{errs:?}"
        );
    }
}
