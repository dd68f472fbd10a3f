variable "subscription_id" {
  description = "Azure subscription to create everything in."
  type        = string
}

variable "name" {
  description = "Prefix of every resource name (lowercase letters and digits)."
  type        = string
  default     = "taskflow"
  validation {
    condition     = can(regex("^[a-z][a-z0-9]{2,15}$", var.name))
    error_message = "Use 3 to 16 lowercase letters and digits, starting with a letter."
  }
}

variable "location" {
  description = "Azure region, e.g. westeurope."
  type        = string
  default     = "westeurope"
}

variable "kubernetes_version" {
  description = "AKS Kubernetes version (null: the region's default)."
  type        = string
  default     = null
}

variable "system_node_size" {
  description = "VM size of the system node pool."
  type        = string
  default     = "Standard_B2s"
}

variable "workload_node_size" {
  description = "VM size of the node pool TaskFlow, Kafka and Dapr run on."
  type        = string
  default     = "Standard_B4ms"
}

variable "workload_min_nodes" {
  description = "Fewest workload nodes (cluster autoscaler)."
  type        = number
  default     = 2
}

variable "workload_max_nodes" {
  description = "Most workload nodes (cluster autoscaler)."
  type        = number
  default     = 5
}

variable "postgres_sku" {
  description = "Azure Database for PostgreSQL Flexible Server SKU."
  type        = string
  default     = "B_Standard_B1ms"
}

variable "postgres_storage_mb" {
  description = "PostgreSQL storage in MB."
  type        = number
  default     = 32768
}

variable "postgres_backup_retention_days" {
  description = "Days of point-in-time restore."
  type        = number
  default     = 7
}

variable "postgres_require_tls" {
  description = "Require TLS for PostgreSQL connections. TaskFlow's PostgreSQL client needs a build with TLS for this (see docs/deploy-cloud.md); the server is reachable only from the cluster's virtual network either way."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = { app = "taskflow" }
}
