#!/usr/bin/env python3
"""A Redfish BMC of an HGX baseboard, for entente-devices' `redfish_*` tests.

Written from DMTF DSP0266 (the Redfish specification) and DSP0268 (the schema guide), standard
library only. It models what the firmware update flow needs:

- the service root, OData service document and a minimal $metadata;
- SessionService (POST Sessions gives an X-Auth-Token, DELETE ends it) and HTTP basic auth;
- UpdateService with MultipartHttpPushUri: a multipart/form-data POST with an `UpdateParameters`
  part (JSON: `Targets`, `@Redfish.OperationApplyTime`) and an `UpdateFile` part;
- TaskService: each update is a Task whose PercentComplete grows in steps, ending Completed, or
  Exception with a message (`--fail-updates MESSAGE` makes every update fail at 40 %);
- FirmwareInventory (`HGX_FW_GPU_SXM_1..N`, `HGX_FW_BMC_0`) whose versions change only when a
  staged image is applied: by a reset of the system (ComputerSystem.Reset) or of the baseboard
  chassis (Chassis.Reset) for `OnReset`, at once for `Immediate`;
- errors as Redfish error bodies with `@Message.ExtendedInfo` (MessageId, Message);
- an AccountService with the predefined roles and the one account, read only.

An image is accepted when its first line is `ENTENTE-TEST-FWPKG` and a later line says
`version=<version>`: that is the version the targets report once it is applied.

It serves HTTPS (`--cert`, `--key`) on `--bind`:`--port` (0: a free port) and prints
`listening on https://HOST:PORT` once ready. It exits when its standard input closes, so a test
that dies does not leave it behind.
"""

import argparse
import base64
import hashlib
import json
import secrets
import ssl
import sys
import threading
import time
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = "/redfish/v1"
SESSIONS = ROOT + "/SessionService/Sessions"
INVENTORY = ROOT + "/UpdateService/FirmwareInventory"
PUSH_URI = ROOT + "/UpdateService/update-multipart"
TASKS = ROOT + "/TaskService/Tasks"
MONITORS = ROOT + "/TaskService/TaskMonitors"
SYSTEM = ROOT + "/Systems/HGX_Baseboard_0"
CHASSIS = ROOT + "/Chassis/HGX_Baseboard_0"
MANAGER = ROOT + "/Managers/HGX_BMC_0"
ACCOUNTS = ROOT + "/AccountService/Accounts"
ROLES = ROOT + "/AccountService/Roles"
PRIVILEGES = {"Administrator": ["Login", "ConfigureManager", "ConfigureUsers",
                                "ConfigureSelf", "ConfigureComponents"],
              "Operator": ["Login", "ConfigureSelf", "ConfigureComponents"],
              "ReadOnly": ["Login", "ConfigureSelf"]}
RESET_TYPES = ["On", "ForceOff", "GracefulShutdown", "GracefulRestart", "ForceRestart",
               "PowerCycle"]
APPLY_TIMES = ["Immediate", "OnReset"]
IMAGE_MAGIC = b"ENTENTE-TEST-FWPKG"


def message(message_id, text, severity="Critical", resolution="None."):
    return {"@odata.type": "#Message.v1_1_1.Message", "MessageId": message_id,
            "Message": text, "Severity": severity, "MessageSeverity": severity,
            "Resolution": resolution}


class Bmc:
    """The emulated BMC's state, shared by the request threads."""

    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.sessions = {}  # id -> (token, user)
        self.next_session = 1
        self.tasks = {}  # id -> Task dict
        self.next_task = 1
        self.power = "On"
        self.inventory = {}  # id -> {"version": str, "pending": str|None, "name": str}
        for slot in range(1, args.gpus + 1):
            self.inventory[f"HGX_FW_GPU_SXM_{slot}"] = {
                "name": f"GPU SXM {slot} firmware", "version": args.gpu_version,
                "pending": None}
        self.inventory["HGX_FW_BMC_0"] = {"name": "HGX BMC firmware",
                                          "version": args.bmc_version, "pending": None}

    # --- resources -------------------------------------------------------------------------

    def firmware(self, fw_id):
        fw = self.inventory[fw_id]
        return {"@odata.id": f"{INVENTORY}/{fw_id}",
                "@odata.type": "#SoftwareInventory.v1_4_0.SoftwareInventory",
                "Id": fw_id, "Name": fw["name"], "Version": fw["version"],
                "Manufacturer": "NVIDIA", "SoftwareId": fw_id, "Updateable": True,
                "Status": {"State": "Enabled", "Health": "OK"}}

    def task(self, task_id):
        return dict(self.tasks[task_id])

    def apply_pending(self):
        for fw in self.inventory.values():
            if fw["pending"] is not None:
                fw["version"], fw["pending"] = fw["pending"], None

    # --- updates ---------------------------------------------------------------------------

    def start_update(self, targets, apply_time, image):
        with self.lock:
            task_id = str(self.next_task)
            self.next_task += 1
            self.tasks[task_id] = {
                "@odata.id": f"{TASKS}/{task_id}", "@odata.type": "#Task.v1_7_0.Task",
                "Id": task_id, "Name": "Firmware update", "TaskState": "Running",
                "TaskStatus": "OK", "PercentComplete": 0,
                "StartTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "TaskMonitor": f"{MONITORS}/{task_id}",
                "Payload": {"TargetUri": PUSH_URI, "HttpOperation": "POST"},
                "Messages": [message("TaskEvent.1.0.TaskStarted",
                                     f"The task with Id '{task_id}' has started.", "OK")]}
        worker = threading.Thread(target=self.run_update,
                                  args=(task_id, targets, apply_time, image), daemon=True)
        worker.start()
        return task_id

    def finish(self, task_id, state, status, messages):
        task = self.tasks[task_id]
        task["TaskState"], task["TaskStatus"] = state, status
        task["Messages"] = task["Messages"] + messages
        task["EndTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def run_update(self, task_id, targets, apply_time, image):
        step = self.args.task_step_ms / 1000.0
        version = image_version(image)
        for percent in (10, 20, 40, 60, 80, 100):
            time.sleep(step)
            with self.lock:
                task = self.tasks[task_id]
                if percent == 40 and self.args.fail_updates is not None:
                    self.finish(task_id, "Exception", "Critical", [message(
                        "Update.1.0.ApplyFailed",
                        f"Installation of image on {', '.join(targets)} failed: "
                        f"{self.args.fail_updates}",
                        resolution="Retry the update; contact the vendor if it fails again.")])
                    return
                if percent == 20 and version is None:
                    self.finish(task_id, "Exception", "Critical", [message(
                        "Update.1.0.VerificationFailed",
                        "Verification of image 'UpdateFile' at 'UpdateFile' failed: the image"
                        " is not an HGX firmware package.")])
                    return
                task["PercentComplete"] = percent
        with self.lock:
            messages = []
            for target in targets:
                fw = self.inventory[target.rsplit("/", 1)[1]]
                if apply_time == "Immediate":
                    fw["version"], fw["pending"] = version, None
                    messages.append(message("Update.1.0.UpdateSuccessful",
                                            f"Device '{target}' successfully updated with image"
                                            f" '{version}'.", "OK"))
                else:
                    fw["pending"] = version
                    messages.append(message("Update.1.0.AwaitToActivate",
                                            f"Awaiting for an action to proceed with activating"
                                            f" image '{version}' on '{target}'.", "OK"))
            self.finish(task_id, "Completed", "OK", messages)


def image_version(image):
    lines = image.split(b"\n")
    if not lines or lines[0].strip() != IMAGE_MAGIC:
        return None
    for line in lines[1:]:
        if line.startswith(b"version="):
            return line[len(b"version="):].strip().decode("ascii", "replace") or None
    return None


def parse_multipart(content_type, body):
    """The parts of a multipart/form-data body as {name: bytes}, or an error string."""
    params = {}
    kind, _, rest = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None, f"Content-Type is {kind.strip()!r}, not multipart/form-data"
    for item in rest.split(";"):
        key, _, value = item.strip().partition("=")
        params[key.lower()] = value.strip('"')
    boundary = params.get("boundary")
    if not boundary:
        return None, "Content-Type has no boundary"
    delimiter = b"--" + boundary.encode()
    if not body.startswith(delimiter):
        return None, "body does not start with the boundary"
    closing = body.find(b"\r\n" + delimiter + b"--")
    if closing < 0:
        return None, "body has no closing boundary (truncated?)"
    parts = {}
    for chunk in body[len(delimiter):closing].split(b"\r\n" + delimiter):
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            return None, "a part has no header block"
        name = None
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-disposition":
                for item in value.split(";"):
                    k, _, v = item.strip().partition("=")
                    if k.lower() == "name":
                        name = v.strip('"')
        if name is None:
            return None, "a part has no Content-Disposition name"
        parts[name] = data
    return parts, None


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that refuses the certificate ends the handshake: not the BMC's problem.
        if self.bmc.args.verbose:
            super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "entente-bmc-emulator/1"

    def log_message(self, fmt, *args):
        if self.server.bmc.args.verbose:
            sys.stderr.write("bmc: " + fmt % args + "\n")

    # --- replies ---------------------------------------------------------------------------

    def common_headers(self, status, body):
        """Headers every response carries: OData-Version, Cache-Control, Allow, ETag, Link."""
        self.body()  # whatever the request carried is consumed before answering
        self.send_header("OData-Version", "4.0")
        self.send_header("Cache-Control", "no-cache")
        allowed = self.allowed_methods()
        if allowed and (self.command in ("GET", "HEAD") or status == 405):
            self.send_header("Allow", ", ".join(allowed))
        if isinstance(body, dict) and "@odata.id" in body and self.command in ("GET", "HEAD"):
            digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
            self.send_header("ETag", f'"{digest[:16]}"')
        odata_type = body.get("@odata.type", "") if isinstance(body, dict) else ""
        if odata_type.startswith("#") and self.command in ("GET", "HEAD"):
            schema = odata_type[1:].rsplit(".", 1)[0]
            self.send_header("Link", f"<https://redfish.dmtf.org/schemas/v1/{schema}.json>;"
                                     " rel=describedby")

    def allowed_methods(self):
        path = self.route()
        if path in (SESSIONS, SESSIONS + "/Members"):
            return ["GET", "HEAD", "POST"]
        if path.startswith(SESSIONS + "/"):
            return ["GET", "HEAD", "DELETE"]
        if path == PUSH_URI or "/Actions/" in path:
            return ["POST"]
        return ["GET", "HEAD"]

    def reply(self, status, body=None, headers=()):
        data = b"" if body is None else json.dumps(body, indent=1).encode()
        self.send_response(status)
        self.common_headers(status, body)
        if body is not None:
            self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def error(self, status, message_id, text, headers=()):
        self.reply(status, {"error": {
            "code": message_id, "message": text,
            "@Message.ExtendedInfo": [message(message_id, text)]}}, headers)

    def not_found(self):
        self.error(404, "Base.1.16.ResourceNotFound",
                   f"The requested resource of type Resource named '{self.path}' was not found.")

    def bad_method(self):
        self.error(405, "Base.1.16.OperationNotAllowed",
                   f"The HTTP method {self.command} is not allowed on {self.path}.")

    # --- request plumbing ------------------------------------------------------------------

    def body(self):
        """The request body (read once), or a problem."""
        if getattr(self, "_body", None) is None:
            self._body = self.read_body()
        return self._body

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            return None, "chunked request bodies are not accepted; send Content-Length"
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        if len(data) != length:
            self.close_connection = True
            return None, f"the body ended after {len(data)} of {length} bytes"
        return data, None

    def json_body(self):
        data, problem = self.body()
        if problem:
            return None, problem
        try:
            value = json.loads(data or b"{}")
        except ValueError as e:
            return None, f"the body is not JSON: {e}"
        if not isinstance(value, dict):
            return None, "the body is not a JSON object"
        return value, None

    def malformed(self, problem):
        self.error(400, "Base.1.16.MalformedJSON",
                   f"The request body submitted was malformed JSON: {problem}.")

    def route(self):
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        return path

    def authorised(self):
        bmc = self.server.bmc
        token = self.headers.get("X-Auth-Token")
        if token is not None:
            with bmc.lock:
                return any(t == token for t, _ in bmc.sessions.values())
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                return False
            return user == bmc.args.user and password == bmc.args.password
        return False

    def refuse(self):
        self.error(401, "Base.1.16.NoValidSession",
                   "There is no valid session established with the implementation.",
                   [("WWW-Authenticate", 'Basic realm="entente-bmc-emulator"')])

    def public(self, path):
        return path in ("/redfish", ROOT, ROOT + "/odata", ROOT + "/$metadata") or (
            self.command == "POST" and path in (SESSIONS, SESSIONS + "/Members"))

    def handle_any(self):
        self._body = None  # one handler serves every request of a kept-alive connection
        path = self.route()
        if self.headers.get("OData-Version", "4.0") != "4.0":
            return self.error(412, "Base.1.16.HeaderInvalid",
                              "The header OData-Version is invalid: this service speaks 4.0.")
        if not self.public(path) and not self.authorised():
            return self.refuse()
        handler = {"GET": self.get, "HEAD": self.get, "POST": self.post,
                   "DELETE": self.delete}.get(self.command)
        if handler is None:
            return self.bad_method()
        handler(path)

    do_GET = do_HEAD = do_POST = do_DELETE = do_PATCH = do_PUT = handle_any

    # --- GET -------------------------------------------------------------------------------

    def get(self, path):
        bmc = self.server.bmc
        if path == "/redfish":
            return self.reply(200, {"v1": ROOT + "/"})
        if path == ROOT + "/$metadata":
            return self.metadata()
        with bmc.lock:
            resource = self.resource(path)
        if resource is None:
            return self.not_found()
        status, body = resource
        self.reply(status, body)

    def resource(self, path):
        bmc = self.server.bmc
        if path == ROOT:
            return 200, {
                "@odata.id": ROOT, "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
                "Id": "RootService", "Name": "Root Service", "RedfishVersion": "1.17.0",
                "UUID": "6b0b7a5e-4b1f-4d5e-9c43-7e1e0e7e0a01",
                "Systems": {"@odata.id": ROOT + "/Systems"},
                "Chassis": {"@odata.id": ROOT + "/Chassis"},
                "Managers": {"@odata.id": ROOT + "/Managers"},
                "SessionService": {"@odata.id": ROOT + "/SessionService"},
                "UpdateService": {"@odata.id": ROOT + "/UpdateService"},
                "TaskService": {"@odata.id": ROOT + "/TaskService"},
                "AccountService": {"@odata.id": ROOT + "/AccountService"},
                "Links": {"Sessions": {"@odata.id": SESSIONS}}}
        if path == ROOT + "/odata":
            return 200, {"@odata.context": ROOT + "/$metadata", "value": [
                {"name": n, "kind": "Singleton", "url": f"{ROOT}/{n}"}
                for n in ("Systems", "Chassis", "Managers", "SessionService",
                          "UpdateService", "TaskService", "AccountService")]}
        if path == ROOT + "/Systems":
            return 200, collection(path, "ComputerSystemCollection", [SYSTEM])
        if path == SYSTEM:
            return 200, {
                "@odata.id": SYSTEM, "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
                "Id": "HGX_Baseboard_0", "Name": "HGX baseboard", "PowerState": bmc.power,
                "Status": {"State": "Enabled", "Health": "OK"},
                "Actions": {"#ComputerSystem.Reset": {
                    "target": SYSTEM + "/Actions/ComputerSystem.Reset",
                    "ResetType@Redfish.AllowableValues": RESET_TYPES}}}
        if path == ROOT + "/Chassis":
            return 200, collection(path, "ChassisCollection", [CHASSIS])
        if path == CHASSIS:
            return 200, {
                "@odata.id": CHASSIS, "@odata.type": "#Chassis.v1_23_0.Chassis",
                "Id": "HGX_Baseboard_0", "Name": "HGX baseboard", "ChassisType": "Module",
                "PowerState": bmc.power, "Status": {"State": "Enabled", "Health": "OK"},
                "Actions": {"#Chassis.Reset": {
                    "target": CHASSIS + "/Actions/Chassis.Reset",
                    "ResetType@Redfish.AllowableValues": ["PowerCycle"]}}}
        if path == ROOT + "/Managers":
            return 200, collection(path, "ManagerCollection", [MANAGER])
        if path == MANAGER:
            return 200, {
                "@odata.id": MANAGER, "@odata.type": "#Manager.v1_17_0.Manager",
                "Id": "HGX_BMC_0", "Name": "HGX BMC", "ManagerType": "BMC",
                "FirmwareVersion": bmc.inventory["HGX_FW_BMC_0"]["version"],
                "Status": {"State": "Enabled", "Health": "OK"}}
        if path == ROOT + "/AccountService":
            return 200, {
                "@odata.id": path, "@odata.type": "#AccountService.v1_13_0.AccountService",
                "Id": "AccountService", "Name": "Account Service", "ServiceEnabled": True,
                "Accounts": {"@odata.id": ACCOUNTS}, "Roles": {"@odata.id": ROLES}}
        if path == ACCOUNTS:
            return 200, collection(path, "ManagerAccountCollection", [ACCOUNTS + "/1"])
        if path == ACCOUNTS + "/1":
            return 200, {
                "@odata.id": path, "@odata.type": "#ManagerAccount.v1_10_0.ManagerAccount",
                "Id": "1", "Name": "User Account", "UserName": bmc.args.user,
                "RoleId": "Administrator", "Enabled": True, "Locked": False,
                "Links": {"Role": {"@odata.id": ROLES + "/Administrator"}}}
        if path == ROLES:
            return 200, collection(path, "RoleCollection", [f"{ROLES}/{r}" for r in PRIVILEGES])
        if path.startswith(ROLES + "/") and path.rsplit("/", 1)[1] in PRIVILEGES:
            role = path.rsplit("/", 1)[1]
            return 200, {
                "@odata.id": path, "@odata.type": "#Role.v1_3_1.Role", "Id": role,
                "Name": f"{role} role", "RoleId": role, "IsPredefined": True,
                "AssignedPrivileges": PRIVILEGES[role]}
        if path == ROOT + "/SessionService":
            return 200, {
                "@odata.id": path, "@odata.type": "#SessionService.v1_1_9.SessionService",
                "Id": "SessionService", "Name": "Session Service", "ServiceEnabled": True,
                "SessionTimeout": 600, "Sessions": {"@odata.id": SESSIONS}}
        if path == SESSIONS:
            return 200, collection(path, "SessionCollection",
                                   [f"{SESSIONS}/{i}" for i in sorted(bmc.sessions)])
        if path.startswith(SESSIONS + "/") and path.rsplit("/", 1)[1] in bmc.sessions:
            return 200, session(path.rsplit("/", 1)[1], bmc.sessions[path.rsplit("/", 1)[1]][1])
        if path == ROOT + "/UpdateService":
            return 200, {
                "@odata.id": path, "@odata.type": "#UpdateService.v1_14_0.UpdateService",
                "Id": "UpdateService", "Name": "Update Service", "ServiceEnabled": True,
                "MultipartHttpPushUri": PUSH_URI, "MaxImageSizeBytes": 1 << 30,
                "FirmwareInventory": {"@odata.id": INVENTORY}}
        if path == INVENTORY:
            return 200, collection(path, "SoftwareInventoryCollection",
                                   [f"{INVENTORY}/{i}" for i in bmc.inventory])
        if path.startswith(INVENTORY + "/") and path.rsplit("/", 1)[1] in bmc.inventory:
            return 200, bmc.firmware(path.rsplit("/", 1)[1])
        if path == ROOT + "/TaskService":
            return 200, {
                "@odata.id": path, "@odata.type": "#TaskService.v1_2_0.TaskService",
                "Id": "TaskService", "Name": "Task Service", "ServiceEnabled": True,
                "CompletedTaskOverWritePolicy": "Oldest", "LifeCycleEventOnTaskStateChange": False,
                "Tasks": {"@odata.id": TASKS}}
        if path == TASKS:
            return 200, collection(path, "TaskCollection", [f"{TASKS}/{i}" for i in bmc.tasks])
        if path.startswith(TASKS + "/") and path.rsplit("/", 1)[1] in bmc.tasks:
            return 200, bmc.task(path.rsplit("/", 1)[1])
        if path.startswith(MONITORS + "/") and path.rsplit("/", 1)[1] in bmc.tasks:
            task = bmc.task(path.rsplit("/", 1)[1])
            running = task["TaskState"] in ("New", "Starting", "Running", "Pending")
            return (202 if running else 200), task
        return None

    def metadata(self):
        refs = "".join(
            f'<edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/{n}_v1.xml">'
            f'<edmx:Include Namespace="{n}"/></edmx:Reference>'
            for n in ("ServiceRoot", "ComputerSystemCollection", "ChassisCollection",
                      "ManagerCollection", "SessionService", "UpdateService", "TaskService",
                      "AccountService"))
        xml = ('<?xml version="1.0" encoding="UTF-8"?>'
               '<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">'
               f'{refs}<edmx:DataServices><Schema xmlns="http://docs.oasis-open.org/odata/ns/edm"'
               ' Namespace="Service"><EntityContainer Name="Service"'
               ' Extends="ServiceRoot.v1_15_0.ServiceContainer"/></Schema></edmx:DataServices>'
               '</edmx:Edmx>').encode()
        self.send_response(200)
        self.common_headers(200, None)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(xml)))
        self.end_headers()
        self.wfile.write(xml)

    # --- POST and DELETE -------------------------------------------------------------------

    def post(self, path):
        if path in (SESSIONS, SESSIONS + "/Members"):
            return self.create_session()
        if path == PUSH_URI:
            return self.multipart_push()
        if path in (SYSTEM + "/Actions/ComputerSystem.Reset",
                    CHASSIS + "/Actions/Chassis.Reset"):
            return self.reset(path)
        if self.resource_exists(path):
            return self.bad_method()
        self.not_found()

    def resource_exists(self, path):
        with self.server.bmc.lock:
            return self.resource(path) is not None

    def create_session(self):
        bmc = self.server.bmc
        body, problem = self.json_body()
        if problem:
            return self.malformed(problem)
        for key in ("UserName", "Password"):
            if not isinstance(body.get(key), str):
                return self.error(400, "Base.1.16.PropertyMissing",
                                  f"The property {key} is a required property and must be"
                                  " included in the request.")
        if body["UserName"] != bmc.args.user or body["Password"] != bmc.args.password:
            return self.error(401, "Base.1.16.InsufficientPrivilege",
                              "There are insufficient privileges for the account or credentials"
                              " associated with the current session to perform the requested"
                              " operation.")
        with bmc.lock:
            session_id = str(bmc.next_session)
            bmc.next_session += 1
            token = secrets.token_hex(16)
            bmc.sessions[session_id] = (token, body["UserName"])
        uri = f"{SESSIONS}/{session_id}"
        self.reply(201, session(session_id, body["UserName"]),
                   [("X-Auth-Token", token), ("Location", uri)])

    def delete(self, path):
        bmc = self.server.bmc
        if path.startswith(SESSIONS + "/"):
            with bmc.lock:
                found = bmc.sessions.pop(path.rsplit("/", 1)[1], None)
            if found is not None:
                return self.reply(204)
            return self.not_found()
        if self.resource_exists(path):
            return self.bad_method()
        self.not_found()

    def multipart_push(self):
        bmc = self.server.bmc
        data, problem = self.body()
        if problem:
            return self.error(400, "Base.1.16.GeneralError",
                              f"The update was refused: {problem}.")
        parts, problem = parse_multipart(self.headers.get("Content-Type", ""), data)
        if problem:
            return self.error(400, "Base.1.16.GeneralError",
                              f"The multipart update was refused: {problem}.")
        for name in ("UpdateParameters", "UpdateFile"):
            if name not in parts:
                return self.error(400, "Base.1.16.PropertyMissing",
                                  f"The property {name} is a required property and must be"
                                  " included in the request.")
        try:
            params = json.loads(parts["UpdateParameters"])
        except ValueError as e:
            return self.malformed(f"UpdateParameters: {e}")
        if not isinstance(params, dict):
            return self.malformed("UpdateParameters is not a JSON object")
        targets = params.get("Targets")
        if not isinstance(targets, list) or not targets:
            return self.error(400, "Base.1.16.PropertyMissing",
                              "The property Targets is a required property and must be included"
                              " in the request.")
        for target in targets:
            fw_id = str(target).rsplit("/", 1)[-1]
            if not str(target).startswith(INVENTORY + "/") or fw_id not in bmc.inventory:
                return self.error(400, "Base.1.16.PropertyValueNotInList",
                                  f"The value '{target}' for the property Targets is not in the"
                                  " list of acceptable values.")
        apply_time = params.get("@Redfish.OperationApplyTime", "Immediate")
        if apply_time not in APPLY_TIMES:
            return self.error(400, "Base.1.16.PropertyValueNotInList",
                              f"The value '{apply_time}' for the property"
                              " @Redfish.OperationApplyTime is not in the list of acceptable"
                              " values.")
        task_id = bmc.start_update(targets, apply_time, parts["UpdateFile"])
        with bmc.lock:
            task = bmc.task(task_id)
        self.reply(202, task, [("Location", task["TaskMonitor"])])

    def reset(self, path):
        bmc = self.server.bmc
        body, problem = self.json_body()
        if problem:
            return self.malformed(problem)
        allowed = RESET_TYPES if "ComputerSystem" in path else ["PowerCycle"]
        reset_type = body.get("ResetType")
        if reset_type not in allowed:
            return self.error(400, "Base.1.16.ActionParameterValueNotInList",
                              f"The value '{reset_type}' for the parameter ResetType in the"
                              f" action Reset is not in the list of acceptable values.")
        with bmc.lock:
            if reset_type in ("ForceOff", "GracefulShutdown"):
                bmc.power = "Off"
            else:
                bmc.power = "On"
                bmc.apply_pending()
        self.reply(204)


def collection(path, kind, members):
    return {"@odata.id": path, "@odata.type": f"#{kind}.{kind}", "Name": kind,
            "Members@odata.count": len(members), "Members": [{"@odata.id": m} for m in members]}


def session(session_id, user):
    return {"@odata.id": f"{SESSIONS}/{session_id}", "@odata.type": "#Session.v1_7_0.Session",
            "Id": session_id, "Name": "User Session", "UserName": user}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--cert", help="server certificate (PEM); without it, plain HTTP")
    parser.add_argument("--key", help="its private key (PEM)")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password", default="bmc-test-password")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--gpu-version", default="96.00.61.00.01")
    parser.add_argument("--bmc-version", default="HGX-22.10-1-rc80")
    parser.add_argument("--task-step-ms", type=int, default=30)
    parser.add_argument("--fail-updates", metavar="MESSAGE",
                        help="every update task fails at 40%% with this message")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args()

    server = Server((args.bind, args.port), Handler)
    server.bmc = Bmc(args)
    scheme = "http"
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(args.cert, args.key)
        # The handshake happens in the request's thread, on its first read.
        server.socket = context.wrap_socket(server.socket, server_side=True,
                                            do_handshake_on_connect=False)
        scheme = "https"

    def exit_when_stdin_closes():
        while sys.stdin.buffer.read(4096):
            pass
        os._exit(0)

    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    host, port = server.server_address[:2]
    print(f"listening on {scheme}://{host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
