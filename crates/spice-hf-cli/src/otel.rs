//! OpenTelemetry export for `spice-hf serve`, on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the
//! traces / metrics specific variables) is set: spans through `tracing-opentelemetry`, the
//! `llm_*` metrics through a `metrics` recorder over an OTel meter, both over OTLP
//! HTTP/protobuf. The standard `OTEL_*` variables (endpoint, headers, timeouts, export interval)
//! are read by the exporters themselves.

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The exporters; [`Otel::shutdown`] flushes them.
pub(crate) struct Otel {
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
}

impl std::fmt::Debug for Otel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Otel")
    }
}

fn configured(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| !v.is_empty())
}

impl Otel {
    /// The exporters, when an OTLP endpoint is configured.
    pub(crate) fn from_env() -> anyhow::Result<Option<Self>> {
        if ![
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        ]
        .iter()
        .any(|v| configured(v))
        {
            return Ok(None);
        }
        let resource = Resource::builder().with_service_name("spice-hf").build();
        let spans = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build()
            .context("cannot build the OTLP span exporter")?;
        let tracer = SdkTracerProvider::builder()
            .with_batch_exporter(spans)
            .with_resource(resource.clone())
            .build();
        let metrics = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build()
            .context("cannot build the OTLP metric exporter")?;
        let meter = SdkMeterProvider::builder()
            .with_periodic_exporter(metrics)
            .with_resource(resource)
            .build();
        Ok(Some(Self { tracer, meter }))
    }

    /// A `tracing` layer exporting spice-hf's spans.
    pub(crate) fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        use tracing_subscriber::Layer as _;
        tracing_opentelemetry::layer()
            .with_tracer(self.tracer.tracer("spice-hf"))
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("spice_hf", tracing::Level::INFO),
            )
    }

    /// A `metrics` recorder over the OTel meter.
    pub(crate) fn recorder(&self) -> metrics_exporter_opentelemetry::Recorder {
        use opentelemetry::metrics::MeterProvider as _;
        metrics_exporter_opentelemetry::Recorder::with_meter(self.meter.meter("spice-hf"))
    }

    /// Flushes and stops both exporters.
    pub(crate) fn shutdown(&self) {
        if let Err(e) = self.tracer.shutdown() {
            tracing::warn!(error = %e, "flushing spans to the OTLP endpoint failed");
        }
        if let Err(e) = self.meter.shutdown() {
            tracing::warn!(error = %e, "flushing metrics to the OTLP endpoint failed");
        }
    }
}
