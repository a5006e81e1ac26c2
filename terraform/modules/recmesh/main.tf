# Deploys the Recmesh chart into a namespace against external Kafka and Redis. Credentials go into a
# Secret created here and handed to the chart as existingSecret, so they never pass through Helm values
# (nor the release's stored manifest).

locals {
  secret_name = "${var.release_name}-credentials"
  # The chart's full name (recmesh.fullname in _helpers.tpl).
  fullname = strcontains(var.release_name, "recmesh") ? var.release_name : "${var.release_name}-recmesh"

  chart_values = {
    env = var.environment
    image = {
      repository = var.image_repository
      tag        = var.image_tag
    }
    existingSecret = local.secret_name
    kafka = {
      bootstrapServers = var.kafka_bootstrap_servers
      securityProtocol = var.kafka_security_protocol
      saslMechanism    = var.kafka_sasl_mechanism
      topicPrefix      = var.kafka_topic_prefix
    }
    redis = {
      url = var.redis_url
    }
    registry = {
      uri = var.registry_uri
      persistence = {
        enabled = !can(regex("://", var.registry_uri))
      }
    }
    lake = {
      uri = var.lake_uri
      persistence = {
        enabled = !can(regex("://", var.lake_uri))
      }
    }
    serviceAccount = {
      annotations = var.service_account_annotations
    }
    metrics = {
      serviceMonitor = {
        enabled = var.service_monitor_enabled
      }
    }
    networkPolicy = {
      enabled = var.network_policy_enabled
    }
    feedback = {
      keda = {
        enabled = var.keda_enabled
      }
    }
    personalization = {
      keda = {
        enabled = var.keda_enabled
      }
    }
  }
}

resource "kubernetes_namespace_v1" "this" {
  count = var.create_namespace ? 1 : 0

  metadata {
    name = var.namespace
    labels = {
      "app.kubernetes.io/part-of" = "recmesh"
    }
  }
}

resource "kubernetes_secret_v1" "credentials" {
  metadata {
    name      = local.secret_name
    namespace = var.namespace
    labels = {
      "app.kubernetes.io/part-of"    = "recmesh"
      "app.kubernetes.io/managed-by" = "terraform"
    }
  }

  # The keys are the services' environment variables (the chart reads them with envFrom).
  data = merge(
    { RECMESH_AUTH__API_KEYS = jsonencode(var.api_keys) },
    var.kafka_sasl_username == "" ? {} : { RECMESH_KAFKA__SASL_USERNAME = var.kafka_sasl_username },
    var.kafka_sasl_password == "" ? {} : { RECMESH_KAFKA__SASL_PASSWORD = var.kafka_sasl_password },
    var.redis_password == "" ? {} : { RECMESH_REDIS__PASSWORD = var.redis_password },
  )

  depends_on = [kubernetes_namespace_v1.this]

  lifecycle {
    precondition {
      condition     = var.environment != "prod" || length(var.api_keys) > 0
      error_message = "api_keys must be set when environment is prod."
    }
  }
}

resource "helm_release" "recmesh" {
  name             = var.release_name
  namespace        = var.namespace
  create_namespace = false
  chart            = var.chart
  version          = var.chart_version

  values = concat([yamlencode(local.chart_values)], var.extra_values)

  # The topic hook Job and rollouts wait for Kafka; give them time before failing the apply.
  wait    = true
  timeout = 900
  atomic  = false

  depends_on = [kubernetes_secret_v1.credentials]
}
