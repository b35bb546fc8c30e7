"""What operations teams touch: systemd notification, metrics, the admin socket, backup."""
