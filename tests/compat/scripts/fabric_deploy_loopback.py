# Original-style script: f.fabric_deploy(host, port, user, password, ..., process_num=2) with the original's
# keyword names, to the loopback SSH server the test started (port, key and known_hosts come as arguments),
# then the deployed consumers run what this script pushes; stop() ends them. Prints OK at the end.
import os
import sys

project, port, key, known_hosts = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
sys.path.insert(0, project)
from deploy_demo import add  # noqa: E402  (the project's module, as in the original's examples)

results = [add.push(i, i * 2) for i in range(4)]
deployment = add.fabric_deploy("127.0.0.1", port, os.environ.get("USER") or __import__("getpass").getuser(), None,
                               path_pattern_exluded_tuple=("/.git/", "/.idea/", "/dist/", "/build/"),
                               file_suffix_tuple_exluded=(".pyc", ".log", ".gz"),
                               only_upload_within_the_last_modify_time=3650 * 24 * 60 * 60,
                               file_volume_limit=1000 * 1000, sftp_log_level=20, extra_shell_str="",
                               invoke_runner_kwargs={"hide": None, "pty": True, "warn": False},
                               python_interpreter=sys.executable, process_num=2,
                               key_filename=key, known_hosts=known_hosts, project_root=project,
                               remote_dir=os.path.join(os.getcwd(), "remote"),
                               env={k: v for k, v in os.environ.items() if k.startswith("FUNBOOST_")})
try:
    assert [r.get(timeout=60) for r in results] == [0, 3, 6, 9]
finally:
    assert deployment.stop(timeout=60), deployment.read_log()[-2000:]
assert not deployment.is_running()
print("OK")
