from sparkops.roles import Role

__all__ = ["Role"]
