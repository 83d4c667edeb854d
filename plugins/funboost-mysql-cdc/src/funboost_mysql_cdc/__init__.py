"""funboost-mysql-cdc: row changes of MySQL / MariaDB (read from the binlog) as funboost messages,
at least once, resuming from a contiguous checkpoint in the state backend."""
from .errors import MysqlCdcError, MysqlCdcPublishError, MysqlCdcServerConfigError
from .options import MysqlCdcOptions

__all__ = ["MysqlCdcError", "MysqlCdcPublishError", "MysqlCdcServerConfigError", "MysqlCdcOptions"]
