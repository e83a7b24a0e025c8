# Makes each new host-path volume folder writable by the sandbox user (see components.sh).
set -u
dir=/tmp/hostpath_pv
mkdir -p "$dir"
chmod 0777 "$dir"/* 2>/dev/null
inotifywait -q -m -e create -e moved_to --format '%w%f' "$dir" | while IFS= read -r path; do
  [ -d "$path" ] && chmod 0777 "$path"
done
