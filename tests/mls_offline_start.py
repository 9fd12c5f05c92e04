"""Run inside a network namespace with only loopback: first `marker-ls start` on a fresh data dir.

Prints one JSON line with what it saw; the server is stopped by its pid before exiting.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import requests

data_dir, port = sys.argv[1], sys.argv[2]
log_path = os.path.join(os.path.dirname(os.path.abspath(data_dir)), "offline-server.log")
with open(log_path, "w") as log:
    server = subprocess.Popen(
        [sys.executable, "-m", "marker_ls_plugin.cli", "start", "--port", port, "--host", "127.0.0.1",
         "--data-dir", data_dir], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
result = {}
try:
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=2).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.5)
        if server.poll() is not None:
            break
    output = open(log_path).read()
    result["log"] = output[-3000:]
    password = re.search(r"Generated password: (\S+)", output)
    result["password_printed"] = bool(password)
    if password:
        session = requests.Session()
        session.get(f"{url}/user/login/", timeout=30)
        login = session.post(f"{url}/user/login/", timeout=30, data={
            "email": "admin@localhost", "password": password.group(1),
            "csrfmiddlewaretoken": session.cookies.get("csrftoken", "")})
        result["logged_in"] = "/user/login" not in login.url
        result["dashboard"] = session.get(f"{url}/marker-ls/", timeout=30).status_code
        result["file_mode"] = oct(os.stat(os.path.join(data_dir, "marker_ls", "first-admin.txt")).st_mode & 0o777)
        projects = session.get(f"{url}/api/projects/", timeout=30).json()["results"]
        result["projects"] = [(p["title"], p["description"]) for p in projects]
        if projects:
            demo = projects[0]["id"]

            def predicted():
                tasks = session.get(f"{url}/api/tasks", params={"project": demo}, timeout=30).json()["tasks"]
                return [t for t in tasks if t["total_predictions"]], tasks

            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and len(predicted()[0]) < len(predicted()[1]):
                time.sleep(1)
            done, tasks = predicted()
            result["demo_tasks"], result["demo_predicted"] = len(tasks), len(done)
            first = session.get(f"{url}/api/tasks/{tasks[0]['id']}", timeout=30).json()
            result["demo_texts"] = [i["value"]["text"][0] for i in first["predictions"][0]["result"]
                                    if i["type"] == "textarea"]
finally:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(20)
print(json.dumps(result))
