// The launcher of the test's Solr distribution: a real Solr (CoreContainer, SolrDispatchFilter,
// cores, configsets) in Jetty through the test framework's JettySolrRunner, configured by the
// system properties the official bin/solr passes: solr.solr.home, solr.jetty.host, jetty.port
// and solr.jetty.inetaccess.includes (SOLR_IP_ALLOWLIST). JettySolrRunner binds to 127.0.0.1
// and has no IP access list, so both are set on its handler chain before it starts.

import java.util.Properties;
import org.apache.solr.embedded.JettyConfig;
import org.apache.solr.embedded.JettySolrRunner;
import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.server.handler.HandlerWrapper;
import org.eclipse.jetty.server.handler.InetAccessHandler;

public final class ProvisionTestSolr extends JettySolrRunner {
  // Static: JettySolrRunner's constructor calls injectJettyHandlers before our fields are set.
  private static String host;
  private static String[] allowed;

  private ProvisionTestSolr(String solrHome, JettyConfig config) {
    super(solrHome, new Properties(), config);
  }

  @Override
  protected HandlerWrapper injectJettyHandlers(HandlerWrapper chain) {
    for (Connector connector : chain.getServer().getConnectors()) {
      ((ServerConnector) connector).setHost(host);
    }
    if (allowed.length == 0) {
      return chain;
    }
    InetAccessHandler access = new InetAccessHandler();
    for (String pattern : allowed) {
      access.include(pattern);
    }
    access.setHandler(chain);
    return access;
  }

  public static void main(String[] args) throws Exception {
    String solrHome = System.getProperty("solr.solr.home");
    if (solrHome == null) {
      throw new IllegalArgumentException("solr.solr.home is not set");
    }
    host = System.getProperty("solr.jetty.host", "127.0.0.1");
    int port = Integer.getInteger("jetty.port", 8983);
    String includes = System.getProperty("solr.jetty.inetaccess.includes", "").trim();
    allowed = includes.isEmpty() ? new String[0] : includes.split("\\s*,\\s*");
    JettyConfig config =
        JettyConfig.builder().setPort(port).setContext("/solr").stopAtShutdown(true).build();
    ProvisionTestSolr solr = new ProvisionTestSolr(solrHome, config);
    solr.start();
    System.out.println("Solr listening on " + host + ":" + solr.getLocalPort() + ", home " + solrHome);
    Thread.currentThread().join();
  }
}
