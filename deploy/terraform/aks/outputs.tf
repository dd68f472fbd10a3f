output "resource_group" {
  description = "Resource group holding everything."
  value       = azurerm_resource_group.main.name
}

output "cluster_name" {
  description = "AKS cluster name (az aks get-credentials -g <resource_group> -n <cluster_name>)."
  value       = azurerm_kubernetes_cluster.main.name
}

output "kube_config" {
  description = "Kubeconfig of the cluster admin."
  value       = azurerm_kubernetes_cluster.main.kube_config_raw
  sensitive   = true
}

output "oidc_issuer_url" {
  description = "OIDC issuer for workload identity federation (e.g. GitHub Actions deploys)."
  value       = azurerm_kubernetes_cluster.main.oidc_issuer_url
}

output "postgres_host" {
  description = "Private host name of the PostgreSQL server."
  value       = azurerm_postgresql_flexible_server.main.fqdn
}

output "database_url" {
  description = "Value for the `database-url` key of the taskflow Secret."
  value       = "postgres://taskflow:${random_password.postgres.result}@${azurerm_postgresql_flexible_server.main.fqdn}:5432/taskflow${var.postgres_require_tls ? "?sslmode=require" : ""}"
  sensitive   = true
}
