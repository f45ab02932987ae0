# Bake an AMI with clobi, its dependencies and the agent unit preinstalled, so a VM boots into
# a ready agent in seconds. Build: `packer init . && packer build -var wheel=../dist/clobi-*.whl .`
packer {
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.3.0"
    }
  }
}

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "wheel" {
  type        = string
  description = "the clobi wheel to install (python -m build --wheel)"
}

source "amazon-ebs" "clobi" {
  region        = var.region
  instance_type = "t3.small"
  ssh_username  = "admin"
  ami_name      = "clobi-agent-{{timestamp}}"
  source_ami_filter {
    filters = {
      name                = "debian-12-amd64-*"
      virtualization-type = "hvm"
    }
    owners      = ["136693071363"] # Debian
    most_recent = true
  }
  metadata_options {
    http_tokens   = "required"
    http_endpoint = "enabled"
  }
  tags = { "clobi:image" = "agent" }
}

build {
  sources = ["source.amazon-ebs.clobi"]

  provisioner "file" {
    source      = var.wheel
    destination = "/tmp/clobi.whl"
  }
  provisioner "file" {
    source      = "clobi-agent.service"
    destination = "/tmp/clobi-agent.service"
  }
  provisioner "shell" {
    inline = [
      "sudo apt-get update -q",
      "sudo apt-get install -yq python3-venv iptables cloud-init",
      "sudo python3 -m venv /opt/clobi",
      "sudo /opt/clobi/bin/pip install -q /tmp/clobi.whl",
      "sudo install -m 0644 /tmp/clobi-agent.service /etc/systemd/system/clobi-agent.service",
      "sudo mkdir -p /etc/clobi /var/lib/clobi",
      "sudo systemctl daemon-reload",
    ]
  }
}
