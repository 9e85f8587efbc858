"""A minimal Django project whose orders and their conveyor jobs commit together."""
