#!/bin/sh
# Assemble a Solr distribution archive from Maven artifacts (for tests): OUT/solr-VERSION.tgz
# with one top directory like the official one: bin/solr (starts it in the foreground),
# server/lib (solr-core, solr-test-framework and their runtime dependencies),
# server/launcher (ProvisionTestSolr), server/resources/log4j2.xml. Also writes
# OUT/solr-VERSION.tgz.sha512. Usage: build.sh OUT VERSION SOURCE_DIR
set -eu
out=$1
version=$2
src=$3
archive="$out/solr-$version.tgz"
if [ -s "$archive" ] && [ -s "$archive.sha512" ]; then
    exit 0
fi
mkdir -p "$out"
work=$(mktemp -d "$out/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
top="$work/solr-$version"
mkdir -p "$top/bin" "$top/server/lib" "$top/server/launcher" "$top/server/resources"
cp "$src/pom.xml" "$work/pom.xml"
mvn -B -q -f "$work/pom.xml" "-Dsolr.version=$version" dependency:copy-dependencies \
    -DincludeScope=runtime "-DoutputDirectory=$top/server/lib"
javac -nowarn -d "$top/server/launcher" -cp "$top/server/lib/*" "$src/ProvisionTestSolr.java"
cp "$src/solr" "$top/bin/solr"
chmod 755 "$top/bin/solr"
cp "$src/log4j2.xml" "$top/server/resources/log4j2.xml"
tar -C "$work" -czf "$work/archive.tgz" "solr-$version"
sha512sum "$work/archive.tgz" | cut -d' ' -f1 > "$work/archive.tgz.sha512"
mv "$work/archive.tgz" "$archive"
mv "$work/archive.tgz.sha512" "$archive.sha512"
