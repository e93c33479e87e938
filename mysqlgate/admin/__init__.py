"""The admin console (admin.listen): look inside a running mysqlgate and steer it."""

from .console import AdminConsole, Control

__all__ = ["AdminConsole", "Control"]
